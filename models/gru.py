"""A lighter alternative: one GRU(32) layer and a Dense head; same inputs and outputs as lstm.py."""

import keras


def build(lookback: int, n_features: int, horizon: int) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(lookback, n_features)),
            keras.layers.GRU(32),
            keras.layers.Dense(horizon),
        ],
        name="gru",
    )
