//! podswitch's dataplane: AF_XDP ports, poll-mode workers, the packet pipeline and its
//! tables. No gRPC, no async runtime, no configuration files: `control` drives it.
//!
//! | module | one job |
//! |---|---|
//! | [`wire`] | typed, zero-copy views over packet bytes; checksums |
//! | [`sys`] | every raw syscall, behind one interface tests can fake |
//! | [`xsk`] | AF_XDP: UMEM, rings, sockets sharing one UMEM per worker |
//! | [`xdp`] | the XDP steering program, built from instructions; XSKMAP; BPF links |
//! | [`port`] | the batched `Port` enum: AF_XDP, in-memory |
//! | [`pipeline`] | the stages: classify, l2, output |
//! | [`tables`] | topology, FDB; immutable snapshots and their publisher |
//! | [`worker`] | the per-core poll loop |
//! | [`stats`] | per-port, per-worker, per-drop-reason counters |
//! | [`debug`] | packet capture and trace taps, off unless asked for |
//!
//! Rules between them: `pipeline` sees frames only through `xsk::Umem` and tables only
//! through a `tables::Tables` snapshot; `worker` is the only caller of `port` on the hot
//! path; only `sys`, `xsk` and `xdp` contain `unsafe`. Data flows one way: control
//! publishes tables; workers report back only through counters and bounded queues.

pub mod debug;
pub mod pipeline;
pub mod port;
pub mod stats;
pub mod sys;
pub mod tables;
pub mod wire;
pub mod worker;
pub mod xdp;
pub mod xsk;
