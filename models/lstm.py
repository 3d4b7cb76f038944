"""The original architecture: two stacked LSTM(50) layers and a Dense head of `horizon` outputs.

Inputs: (lookback, n_features) standardised log-return windows; outputs: the next `horizon`
standardised log returns. Loaded by name through cryptoflow.forecast.architectures.
"""

import keras


def build(lookback: int, n_features: int, horizon: int) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(lookback, n_features)),
            keras.layers.LSTM(50, return_sequences=True),
            keras.layers.LSTM(50),
            keras.layers.Dense(horizon),
        ],
        name="lstm",
    )
