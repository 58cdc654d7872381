# One handler for a run of invocations: echoes what it got, fails when
# asked, or answers with a string of the size asked for.


def handler(event, context):
    if "fail" in event:
        raise ValueError(event["fail"])
    if "size" in event:
        return "x" * event["size"]
    cc = context.client_context
    return {
        "event": event,
        "requestId": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "custom": cc.custom if cc else None,
        "remaining": context.get_remaining_time_in_millis(),
    }
