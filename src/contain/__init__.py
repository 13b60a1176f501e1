from contain.errors import *  # noqa
