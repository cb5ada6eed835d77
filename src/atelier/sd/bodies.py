"""The base of every request body: strict types, so mistakes are refused, not reinterpreted.

Lax pydantic reads `true` as 1, `"20"` as 20 and `20.7` as an error but `20.0` as 20;
a bool is not a step count. Strict mode accepts JSON integers for integer fields and
JSON numbers for float fields, nothing else. Floats must be finite (`NaN` is valid
Python JSON). Every string is checked for unpaired surrogates, which cannot be encoded
as UTF-8 anywhere downstream.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from atelier.sd.params import MAX_PROMPT_CHARS, unpaired_surrogate


def has_unpaired_surrogate(value: Any) -> bool:
    """True when any string in a JSON value (keys too) has an unpaired surrogate."""
    if isinstance(value, str):
        return unpaired_surrogate(value)
    if isinstance(value, dict):
        return any(has_unpaired_surrogate(k) or has_unpaired_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_unpaired_surrogate(v) for v in value)
    return False


class StrictBody(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, str_max_length=MAX_PROMPT_CHARS)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        if has_unpaired_surrogate(value):
            raise ValueError("contains an unpaired UTF-16 surrogate; send valid Unicode")
        return value
