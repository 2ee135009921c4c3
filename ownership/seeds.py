"""One --seed seeds everything: every model's initialisation seed is derived from it and a name."""
import hashlib


def derive(seed, *names):
    """A stable 31-bit seed from the experiment seed and names (e.g. derive(0, 'benign', 'wrn10-2'))."""
    h = hashlib.sha256("/".join([str(seed), *map(str, names)]).encode()).hexdigest()
    return int(h[:8], 16) & 0x7FFFFFFF
