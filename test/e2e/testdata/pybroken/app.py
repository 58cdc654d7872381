"""A function whose import fails: the module it needs does not exist."""

import baton_e2e_module_that_does_not_exist  # noqa: F401


def handler(event, context):
    return {"unreachable": True}
