import os


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    greeting = os.environ.get("GREETING", "Hello")
    print(f"greeting {name} from {context.function_name} v{context.function_version}")
    return {
        "message": f"{greeting}, {name}!",
        "requestId": context.aws_request_id,
        "pid": os.getpid(),
    }
