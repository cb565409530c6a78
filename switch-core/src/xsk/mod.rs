//! AF_XDP: UMEM memory, the four rings, and sockets that share one UMEM per worker.
//!
//! One worker owns one [`Umem`]. The first socket the worker opens registers it
//! (`XDP_UMEM_REG`); every further socket of that worker, on any interface and queue,
//! binds with `XDP_SHARED_UMEM` and gets fill and completion rings of its own. A frame
//! address therefore means the same bytes on every port of the worker, and forwarding
//! between two ports moves an address, never the bytes.
//!
//! Ownership of a frame is always exactly one of: the worker's free pool, a port's fill
//! ring or rx ring (the kernel's), the worker's current batch, a port's tx ring (the
//! kernel's until it appears on the completion ring). `XskPort` counts what it gave the
//! kernel, so a stopped worker can account for every frame.
//!
//! Why our own layer: see the commit that added it — no maintained, permissively licensed
//! crate shares a UMEM between interfaces without building C.
#![allow(unsafe_code)]

mod ring;
mod socket;
mod umem;

pub use ring::{ConsumerRing, ProducerRing};
pub use socket::{BindMode, XskConfig, XskError, XskSocket, XskStatistics};
pub use umem::{Backing, HugepagePolicy, Umem, UmemConfig, UmemError, UmemRegion, FRAME_HEADROOM, NO_OWNER};
