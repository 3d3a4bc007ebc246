"""How wide each feature type's input row is: declared here, beside the schema's
``feature_type`` choices, so a config can be sized (the memory budget, a checkpoint's shapes)
before torch is imported. :mod:`nbody_engine.learning.features` computes the features."""

DELTA_WIDTH = 7  # the change statistics of one step (delta_mag history rows)
STATE_WIDTH = {"basic": 11, "delta_mag": 11, "rich": 16, "radial": 1}


def row_width(feature_type: str) -> int:
    """Width of one history row."""
    return DELTA_WIDTH if feature_type == "delta_mag" else STATE_WIDTH[feature_type]


def input_width(feature_type: str, history_len: int) -> int:
    """Width of the network's input: the state's features and ``history_len`` history rows."""
    return STATE_WIDTH[feature_type] + history_len * row_width(feature_type)
