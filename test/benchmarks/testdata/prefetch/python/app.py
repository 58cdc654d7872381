# A function with a realistic import set: the modules a small web or data
# function pulls in at init. The handler reports the major page faults of
# the init: the grain worker (this instance's parent, which imported this
# module before forking it) and the instance itself, and the bytes both
# read from storage.
import asyncio
import base64
import csv
import datetime
import decimal
import email.mime.multipart
import email.mime.text
import email.parser
import hashlib
import http.client
import json
import logging
import os
import re
import sqlite3
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree
import zipfile


def _majflt(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return -1
    # Fields after the command (which may contain spaces) start at state.
    return int(stat.rsplit(")", 1)[1].split()[9])


def _read_bytes(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def handler(event, context):
    return {
        "majflt": _majflt("self"),
        "parentMajflt": _majflt(os.getppid()),
        "readBytes": _read_bytes("self") + _read_bytes(os.getppid()),
    }
