//! AF_XDP: UMEM memory in segments, the four rings, and the sockets.
//!
//! One worker owns one [`Umem`]: its own segment 0 and one [`Segment`] per AF_XDP
//! socket, which that socket registers (`XDP_UMEM_REG`) and binds with fill and
//! completion rings of its own. A frame address names its segment and the offset in
//! it (see `umem`), so forwarding between two sockets of one segment moves an address;
//! into another segment it costs one copy, made by the sending port.
//!
//! Ownership of a frame is always exactly one of: its segment's free pool, a port's fill
//! ring or rx ring (the kernel's), the worker's current batch, the
//! worker's parked packets, a port's tx ring (the
//! kernel's until it appears on the completion ring). `XskPort` counts what it gave the
//! kernel, so a stopped worker can account for every frame.
//!
//! Why our own layer: see the commit that added it — no maintained, permissively licensed
//! crate lets one worker own the UMEMs of many sockets and address frames across them
//! without building C.
#![allow(unsafe_code)]

mod ring;
mod socket;
mod umem;

pub use ring::{ConsumerRing, ProducerRing};
pub use socket::{BindMode, XskConfig, XskError, XskSocket, XskStatistics};
pub use umem::{
    frame_addr, offset_of, port_segment, segment_of, Backing, HugepagePolicy, Segment, Umem, UmemConfig, UmemError,
    UmemRegion, FRAME_HEADROOM,
};
