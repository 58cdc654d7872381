import os

# Marks, from each child's side of a fork, that the function's own at-fork
# handlers ran: a file named after the child's pid.
_MARKS = os.environ["GRAIN_TEST_MARKS"]


def _mark():
    with open(os.path.join(_MARKS, str(os.getpid())), "w"):
        pass


os.register_at_fork(after_in_child=_mark)


def handler(event, context):
    return {"pid": os.getpid()}
