"""Tensor and sequence columns cross the wire whole: shapes and dtypes as the vault read them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from privml.service._wire import frame_from_ipc, frame_to_ipc


def test_tensor_and_sequence_columns_round_trip_through_arrow_ipc() -> None:
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    frame = pd.DataFrame(
        {
            "image": pd.Series([images[0], None], dtype=object),
            "codes": pd.Series([np.array([1, 2, 3]), np.array([], dtype=np.int64)], dtype=object),
            "age": [30, 40],
        }
    )
    frame.attrs["privml_modes"] = {"image": "raw", "codes": "raw", "age": "raw"}
    back = frame_from_ipc(frame_to_ipc(frame))
    assert back["image"][0].shape == (3, 4) and back["image"][0].dtype == np.uint8
    np.testing.assert_array_equal(back["image"][0], images[0])
    assert back["image"][1] is None
    assert back["codes"][0].tolist() == [1, 2, 3] and back["codes"][1].tolist() == []
    assert back.attrs["privml_modes"]["image"] == "raw"
    assert frame["image"][0].shape == (3, 4)  # the caller's frame is left as it was
