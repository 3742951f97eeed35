"""The pydantic models storage hands back: what a stat, a copy or a bring-online produced."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verified = Literal["adler32", "size", "none"]


class StatInfo(BaseModel):
    """What ``stat`` says about a URL."""

    model_config = ConfigDict(frozen=True)

    size: int = Field(description="Size in bytes (0 for most directories)")
    is_dir: bool
    mtime: float = Field(description="Modification time, seconds since the epoch (0: unknown)")
    mode: int = Field(default=0, description="st_mode as the endpoint reports it")


class TransferResult(BaseModel):
    """One finished copy: where from, where to, how much, how fast, how it was checked."""

    src: str
    dst: str
    size: int
    seconds: float
    attempts: int = Field(description="1 when the first try worked")
    verified: Verified = Field(
        description="adler32: sizes and checksums agree; size: only sizes could be compared "
        "(an endpoint does not answer checksums); none: verification was switched off"
    )
    checksum: str | None = Field(default=None, description="adler32 of the file when known")
    atomic: bool = Field(
        description="True: written under a temporary name and renamed once verified"
    )
    note: str = Field(default="", description="Anything worth saying (why not atomic, ...)")

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self.size / self.seconds if self.seconds > 0 else 0.0


class TransferProgress(BaseModel):
    """Sent to a ``progress`` callback: the running totals of a many-file transfer."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int = Field(description="0 when source sizes are not known in advance")
    current: str = Field(default="", description="URL of the file that just finished")
    partial: bool = Field(
        default=False, description="a report while files move, not after one finished"
    )


class BringOnlineResult(BaseModel):
    """What a bring-online request answered: per URL, online (True) or still pending."""

    token: str = Field(default="", description="Request token for bring_online_poll")
    online: dict[str, bool]
    errors: dict[str, str] = Field(default_factory=dict)

    @property
    def all_online(self) -> bool:
        """Every file asked about is on disk and none failed: the condition to stop polling
        (``while not result.all_online: result = storage.bring_online_poll(urls, token)``).
        Public API for notebooks and scripts that drive a bring-online themselves."""
        return bool(self.online) and all(self.online.values()) and not self.errors
