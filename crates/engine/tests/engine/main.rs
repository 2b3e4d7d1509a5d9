//! Engine tests on real tasks, files and inotify: ordering, notify/refresh, parallelism, swaps,
//! failures, poll, noop, convergence and shutdown. They synchronise on engine events and
//! recorded facts under a timeout, never on sleeps, and assert no durations except lower
//! bounds the engine guarantees (delays, rate limits).

mod autogroup;
mod common;
mod failure;
mod misc;
mod order;
mod real_kinds;
mod swap;
