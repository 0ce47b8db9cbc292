"""A model of PyTorch's CUDA caching allocator, replayed over a sequence of allocations and frees.

It follows ``c10/cuda/CUDACachingAllocator.cpp`` with default settings (no ``PYTORCH_CUDA_ALLOC_CONF``), one device,
one stream:

* a request is rounded up to a multiple of 512 bytes;
* requests of at most 1 MiB come from the *small* pool (2 MiB segments), larger ones from the *large* pool;
* a new segment is 2 MiB (small), 20 MiB (requests under 10 MiB) or the request rounded up to 2 MiB;
* the free block chosen is the best fit (smallest size, then lowest address) in the request's pool;
* a block is split only if what remains is at least 512 bytes (small pool) or **more than 1 MiB** (large pool) —
  otherwise the whole block is handed out and ``memory_allocated`` counts all of it;
* a freed block merges with free neighbours of its segment; segments are never returned (no ``empty_cache``).

``memory_allocated`` is the sum of handed-out block sizes and ``memory_reserved`` the sum of segment sizes, exactly
the statistics ``torch.cuda.max_memory_allocated/reserved`` report.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20          # requests up to this use the small pool
SMALL_BUFFER = 2 << 20        # small-pool segment size
LARGE_BUFFER = 20 << 20       # segment size for large requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20         # larger segments are rounded up to this


def round_size(nbytes: int) -> int:
    """The block size a request of ``nbytes`` asks for: a multiple of 512, at least 512."""
    return MIN_BLOCK * max(1, -(-nbytes // MIN_BLOCK))


def segment_size(size: int) -> int:
    """The cudaMalloc size the allocator asks for when no cached block fits a request of ``size`` bytes."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * -(-size // ROUND_LARGE)


@dataclass(eq=False)
class _Block:
    addr: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None


@dataclass
class CachingAllocator:
    """Replays ``malloc(key, nbytes)`` / ``free(key)``; tracks allocated/reserved bytes and their peaks."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    _pools: dict[bool, list[tuple[int, int, _Block]]] = field(default_factory=lambda: {True: [], False: []})
    _live: dict[object, _Block] = field(default_factory=dict)
    _next_addr: int = 0

    def malloc(self, key: object, nbytes: int) -> int:
        """Allocate for ``key``; returns the block size counted as allocated (0 for an empty tensor)."""
        if nbytes == 0:
            return 0
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        block = self._take_free(small, size)
        if block is None:
            seg = segment_size(size)
            block = _Block(self._next_addr, seg, small)
            self._next_addr += seg + (1 << 30)  # segments are never adjacent
            self.reserved += seg
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        remaining = block.size - size
        if (remaining >= MIN_BLOCK) if small else (remaining > SMALL_SIZE):
            rest = _Block(block.addr + size, remaining, small, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._insert(rest)
        block.free = False
        self._live[key] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block.size

    def free(self, key: object) -> int:
        """Free ``key``'s block (merging with free neighbours); returns the bytes it had allocated."""
        block = self._live.pop(key, None)
        if block is None:
            return 0
        self.allocated -= block.size
        released = block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._insert(block)
        return released

    def reset_peaks(self) -> None:
        """Like ``torch.cuda.reset_peak_memory_stats``: peaks restart from the current values."""
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def largest_free_block(self, nbytes: int) -> int:
        """The largest cached free block in the pool a request of ``nbytes`` would use (0 if none)."""
        pool = self._pools[round_size(nbytes) <= SMALL_SIZE]
        return pool[-1][0] if pool else 0

    def _take_free(self, small: bool, size: int) -> _Block | None:
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i == len(pool):
            return None
        block = pool.pop(i)[2]
        return block

    def _insert(self, block: _Block) -> None:
        bisect.insort(self._pools[block.small], (block.size, block.addr, block))

    def _remove(self, block: _Block) -> None:
        pool = self._pools[block.small]
        i = bisect.bisect_left(pool, (block.size, block.addr))
        assert pool[i][2] is block
        pool.pop(i)
