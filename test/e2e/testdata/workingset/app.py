# A cold start that reads a realistic set of standard modules: their pages
# are the working set Baton records and prefetches.
import decimal
import email.parser
import http.client
import json
import sqlite3

VERSION = open(__file__.rsplit("/", 1)[0] + "/VERSION").read().strip()


def handler(event, context):
    return {"version": VERSION, "sqlite": sqlite3.sqlite_version, "pi": str(decimal.Decimal(355) / 113)[:6]}
