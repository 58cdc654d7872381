import os


def handler(event, context):
    print("handling", event.get("x"))
    return {"echo": event}


def fail(event, context):
    raise ValueError("bad value: %s" % event.get("x"))


def unmarshalable(event, context):
    return {"obj": object()}


def ctx(event, context):
    identity = context.identity
    client_context = context.client_context
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "cognito_identity_id": identity.cognito_identity_id if identity else None,
        "client_custom": client_context.custom if client_context else None,
        "client_app_title": client_context.client.app_title if client_context and client_context.client else None,
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
        "cwd": os.getcwd(),
    }


def echo(event, context):
    return {"echo": event}


def nan(event, context):
    return {"ratio": float("nan"), "limit": float("inf")}
