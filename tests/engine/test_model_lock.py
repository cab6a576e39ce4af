"""The engine lock: reentrant, first come first served, and a long job lets waiting jobs through
between its steps (real threads, synchronised with events, no sleeps)."""

from __future__ import annotations

import threading

import pytest

from engine.render.model_lock import ModelLock

WAIT_S = 10.0


def test_reentrant_for_its_holder_and_released_at_depth_zero() -> None:
    lock = ModelLock()
    with lock, lock:
        assert lock.held_by_me()
    assert not lock.held_by_me()
    with pytest.raises(RuntimeError):
        lock.release()


def test_waiters_get_the_lock_in_arrival_order() -> None:
    lock = ModelLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(3):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        while lock.waiting < i + 1:  # each queued before the next starts
            threading.Event().wait(0.001)
    lock.release()
    for t in threads:
        t.join(WAIT_S)
    assert order == [0, 1, 2]


def test_a_long_job_lets_a_waiting_job_run_between_its_steps() -> None:
    """A 'clip' of 50 steps holds the lock; an 'image' job asking at step 3 runs at the next step
    boundary, not after step 50."""
    lock = ModelLock()
    steps_done: list[int] = []
    image_asks = threading.Event()
    image_ran_after: list[int] = []

    def image_job() -> None:
        image_asks.set()
        with lock:
            image_ran_after.append(len(steps_done))

    image = threading.Thread(target=image_job)
    with lock:
        for step in range(1, 51):
            steps_done.append(step)
            if step == 3:
                image.start()
                image_asks.wait(WAIT_S)
                while lock.waiting == 0:  # the image job is queued for the lock
                    threading.Event().wait(0.001)
            assert lock.yield_to_waiters() == (step == 3)
            assert lock.held_by_me()
    image.join(WAIT_S)
    assert image_ran_after == [3]
    assert lock.yields == 1


def test_yield_keeps_the_depth_of_a_reentrant_holder() -> None:
    lock = ModelLock()
    other_done = threading.Event()
    lock.acquire()
    lock.acquire()
    t = threading.Thread(target=lambda: (lock.acquire(), lock.release(), other_done.set()))
    t.start()
    while lock.waiting == 0:
        threading.Event().wait(0.001)
    assert lock.yield_to_waiters()
    assert other_done.is_set()
    lock.release()
    assert lock.held_by_me()  # still held once more
    lock.release()
    assert not lock.held_by_me()
    t.join(WAIT_S)


def test_yield_without_holding_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        ModelLock().yield_to_waiters()


def test_a_non_blocking_acquire_takes_only_a_free_lock() -> None:
    lock = ModelLock()
    taken: list[bool] = []
    with lock:
        t = threading.Thread(target=lambda: taken.append(lock.acquire(blocking=False)))
        t.start()
        t.join(WAIT_S)
    assert taken == [False]
    assert lock.acquire(blocking=False) and lock.held_by_me()
    lock.release()
