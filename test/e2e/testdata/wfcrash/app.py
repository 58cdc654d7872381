import time


def step(event, context):
    """Adds this state's run to the event's trail; a state named in
    event["slow"] sleeps on its first attempt, so a test can kill what runs
    it mid-step."""
    cc = context.client_context
    custom = (cc.custom if cc is not None else None) or {}
    state = custom.get("baton-state", "?")
    attempt = int(custom.get("baton-attempt", "0"))
    if attempt == 1 and state in event.get("slow", []):
        time.sleep(event.get("sleep", 30))
    event.setdefault("trail", []).append([state, attempt])
    return event
