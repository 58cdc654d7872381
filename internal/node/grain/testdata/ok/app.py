import os


def handler(event, context):
    print("hello from", event.get("name"))
    return {"name": event.get("name"), "pid": os.getpid(), "requestId": context.aws_request_id}
