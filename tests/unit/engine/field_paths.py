"""Every field of a JSON-like value, as paths of keys and indexes: what the schema tests damage one at a time."""


def field_paths(value, path=(), items_per_list=1):
    """Paths below `path` to every dict key and to the first items_per_list items of every list, depth first."""
    if isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list):
        children = enumerate(value[:items_per_list])
    else:
        return
    for key, item in children:
        yield path + (key,)
        yield from field_paths(item, path + (key,), items_per_list)
