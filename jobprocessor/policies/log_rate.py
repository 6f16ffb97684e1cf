"""How many log lines a kind of event may write: at most `per_window` per key (a job type) in each window of
`window_s` seconds; the rest are counted, and the next line admitted for that key says how many were left out.
A failing job type floods no log (a 10,000-job batch failing at once writes 10 lines a minute, not 10,000), and
every type still gets its own lines. Pure: the clock is passed in."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class LogRate:
    per_window: int = 10
    window_s: float = 60.0
    _windows: dict = field(default_factory=dict)  # key -> [window start, lines in it, left out since last line]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def admit(self, key: str, now: float) -> tuple[bool, int]:
        """(write this line?, lines left out for this key since the last one written)."""
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.window_s:
                left_out = window[2] if window else 0
                self._windows[key] = [now, 1, 0]
                return True, left_out
            if window[1] < self.per_window:
                window[1] += 1
                left_out, window[2] = window[2], 0
                return True, left_out
            window[2] += 1
            return False, 0
