//! Page indices, byte addresses, page counts and folio orders, as distinct types.
//!
//! Kernel: `unsigned long pfn` and, after the v6 proposal, the
//! device-private "offset" that shares the same C type
//! (`device_private_page_to_offset()`, `mm/memremap.c`).
//!
//! In C both are `unsigned long`, and a flag (`PVMW_DEVICE_PRIVATE`,
//! `MIGRATE_PFN_DEVICE_PRIVATE`, `HMM_PFN_DEVICE_PRIVATE`) says which one a
//! value is. Here each space has its own type, with a private field and no
//! arithmetic across kinds, so that the confusion cannot compile:
//!
//! ```compile_fail,E0308
//! use devpriv_core::{DevicePrivateOffset, Pfn};
//! let pfn = Pfn::new(42);
//! let offset: DevicePrivateOffset = pfn; // a pfn is not an offset
//! ```
//!
//! ```compile_fail,E0308
//! use devpriv_core::{DevicePrivateOffset, Pfn};
//! // Distances are only defined within one space.
//! let _ = Pfn::new(42).checked_offset_from(DevicePrivateOffset::new(40));
//! ```
//!
//! Where the kernel carries "which space" next to a number, the model uses
//! [`PageFrame`].

use crate::consts::{PAGE_MASK, PAGE_SHIFT, PAGE_SIZE};
use core::fmt;

mod sealed {
    pub trait Sealed {}
}

/// A page index in one address space: [`Pfn`] or [`DevicePrivateOffset`].
///
/// Sealed, so generic helpers such as [`ranges_overlap`] work for either
/// kind but never mix them.
///
/// Kernel: none (model only).
pub trait PageIndex: sealed::Sealed + Copy + Ord + fmt::Debug {
    /// The raw page index.
    fn index(self) -> u64;
}

/// A number of pages.
///
/// Kernel: `unsigned long nr_pages` (`folio_nr_pages()`,
/// `dev_pagemap::nr_pages`, v6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct PageCount(u64);

impl PageCount {
    /// Zero pages.
    pub const ZERO: PageCount = PageCount(0);
    /// One page.
    pub const ONE: PageCount = PageCount(1);

    /// A count of `n` pages.
    pub const fn new(n: u64) -> Self {
        PageCount(n)
    }

    /// The raw count.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self + rhs`, or `None` on overflow.
    pub const fn checked_add(self, rhs: PageCount) -> Option<PageCount> {
        match self.0.checked_add(rhs.0) {
            Some(n) => Some(PageCount(n)),
            None => None,
        }
    }

    /// `self - rhs`, or `None` on underflow.
    pub const fn checked_sub(self, rhs: PageCount) -> Option<PageCount> {
        match self.0.checked_sub(rhs.0) {
            Some(n) => Some(PageCount(n)),
            None => None,
        }
    }

    /// The size in bytes, or `None` on overflow.
    ///
    /// Kernel: `nr_pages * PAGE_SIZE` (unchecked in C, main).
    pub const fn checked_bytes(self) -> Option<u64> {
        self.0.checked_mul(PAGE_SIZE)
    }

    /// Pages needed to hold `bytes`, rounding up.
    ///
    /// Kernel: `DIV_ROUND_UP(size, PAGE_SIZE)`, as v6 drivers compute
    /// `nr_pages`.
    pub const fn from_bytes_round_up(bytes: u64) -> PageCount {
        PageCount(bytes.div_ceil(PAGE_SIZE))
    }

    /// `true` for zero pages.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// A folio order: the folio spans `1 << order` pages.
///
/// Kernel: `unsigned int order` (`folio_order()`, main).
///
/// # Invariants
///
/// The order is below 64, so `1 << order` is a valid `u64`. Orders above
/// `MAX_PAGE_ORDER` are representable on purpose: the kernel's
/// `zone_device_page_init()` accepts them (hazard H17), and the model must
/// be able to say so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Order(u8);

impl Order {
    /// Order 0: a single page.
    pub const ZERO: Order = Order(0);
    /// `HPAGE_PMD_ORDER` (9): a 2 MiB folio.
    ///
    /// Kernel: `HPAGE_PMD_ORDER` (main).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "HPAGE_PMD_ORDER is 9; checked by a test"
    )]
    pub const HPAGE_PMD: Order = Order(crate::consts::HPAGE_PMD_ORDER as u8);

    /// The order `order`, or `None` if `1 << order` would not fit in 64 bits.
    pub const fn new(order: u32) -> Option<Order> {
        if order < 64 {
            #[expect(clippy::cast_possible_truncation, reason = "order < 64")]
            Some(Order(order as u8))
        } else {
            None
        }
    }

    /// The raw order.
    pub const fn get(self) -> u32 {
        self.0 as u32
    }

    /// Pages in a folio of this order: `1 << order`.
    ///
    /// Kernel: `1 << order`, `folio_nr_pages()` (main).
    pub const fn nr_pages(self) -> PageCount {
        PageCount(1 << self.0)
    }
}

/// Generates a page-index newtype with the shared, same-kind-only arithmetic.
macro_rules! page_index {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The page index `index`.
            pub const fn new(index: u64) -> Self {
                $name(index)
            }

            /// The raw page index.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + n` pages, or `None` on overflow.
            pub const fn checked_add(self, n: PageCount) -> Option<Self> {
                match self.0.checked_add(n.get()) {
                    Some(i) => Some($name(i)),
                    None => None,
                }
            }

            /// `self - n` pages, or `None` on underflow.
            pub const fn checked_sub(self, n: PageCount) -> Option<Self> {
                match self.0.checked_sub(n.get()) {
                    Some(i) => Some($name(i)),
                    None => None,
                }
            }

            /// Pages from `base` up to `self`, or `None` if `self < base`.
            ///
            /// Only defined within one address space: the argument has the
            /// same type as `self`.
            pub const fn checked_offset_from(self, base: Self) -> Option<PageCount> {
                match self.0.checked_sub(base.0) {
                    Some(n) => Some(PageCount::new(n)),
                    None => None,
                }
            }

            /// Rounds up to a multiple of `align` pages, which must be a
            /// power of two; `None` if it is not, or on overflow.
            pub const fn checked_align_up(self, align: PageCount) -> Option<Self> {
                let a = align.get();
                if !a.is_power_of_two() {
                    return None;
                }
                match self.0.checked_add(a - 1) {
                    Some(i) => Some($name(i & !(a - 1))),
                    None => None,
                }
            }

            /// `true` if the index is a multiple of `1 << order`.
            ///
            /// Kernel: `IS_ALIGNED(pfn, 1 << order)` (main).
            pub const fn is_aligned(self, order: Order) -> bool {
                self.0 & (order.nr_pages().get() - 1) == 0
            }
        }

        impl sealed::Sealed for $name {}

        impl PageIndex for $name {
            fn index(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

/// Generates a byte-address newtype and its bridge to a page-index type.
macro_rules! byte_addr {
    ($(#[$meta:meta])* $name:ident, page = $page:ident, to_page = $to_page:ident, from_page = $from_page:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The byte address `addr`.
            pub const fn new(addr: u64) -> Self {
                $name(addr)
            }

            /// The raw byte address.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + bytes`, or `None` on overflow.
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(a) => Some($name(a)),
                    None => None,
                }
            }

            /// Bytes from `base` up to `self`, or `None` if `self < base`.
            pub const fn checked_offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// Rounds up to a multiple of `align` bytes, which must be a power
            /// of two; `None` if it is not, or on overflow.
            pub const fn checked_align_up(self, align: u64) -> Option<Self> {
                if !align.is_power_of_two() {
                    return None;
                }
                match self.0.checked_add(align - 1) {
                    Some(a) => Some($name(a & !(align - 1))),
                    None => None,
                }
            }

            /// `true` if the address is page-aligned.
            ///
            /// Kernel: `PAGE_ALIGNED()` (main).
            pub const fn is_page_aligned(self) -> bool {
                self.0 & !PAGE_MASK == 0
            }

            /// The byte offset within its page.
            ///
            /// Kernel: `offset_in_page()` (main).
            pub const fn offset_in_page(self) -> u64 {
                self.0 & !PAGE_MASK
            }

            /// The page that contains this address (`addr >> PAGE_SHIFT`).
            pub const fn $to_page(self) -> $page {
                $page(self.0 >> PAGE_SHIFT)
            }
        }

        impl $page {
            /// The address of the first byte of this page
            /// (`index << PAGE_SHIFT`), or `None` if it does not fit in 64
            /// bits.
            pub const fn $from_page(self) -> Option<$name> {
                if self.0 > (u64::MAX >> PAGE_SHIFT) {
                    None
                } else {
                    Some($name(self.0 << PAGE_SHIFT))
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

page_index! {
    /// A page frame number in the CPU physical address space.
    ///
    /// Kernel: `unsigned long pfn` (`page_to_pfn()`, `pte_pfn()`,
    /// `folio_pfn()`, main).
    Pfn
}

page_index! {
    /// A page index in the device-private address space. Never a pfn.
    ///
    /// Kernel: the "device-private offset" of the v6 proposal
    /// (`device_private_page_to_offset()`, `mm/memremap.c`), which C stores in
    /// an `unsigned long` next to a `*_DEVICE_PRIVATE` flag.
    DevicePrivateOffset
}

byte_addr! {
    /// A byte address in the CPU physical address space.
    ///
    /// Kernel: `phys_addr_t` / `resource_size_t` (main).
    PhysAddr, page = Pfn, to_page = to_pfn, from_page = to_phys_addr
}

byte_addr! {
    /// A byte address in the device-private address space: the unit in
    /// which the kernel keys `device_private_pgmap_tree`.
    ///
    /// Kernel: `dev_pagemap::range.start` for `MEMORY_DEVICE_PRIVATE`, after
    /// the v6 proposal; `offset << PAGE_SHIFT` in `device_private_offset_to_page()`.
    DevicePrivateAddr, page = DevicePrivateOffset, to_page = to_offset, from_page = to_addr
}

/// What an entry or a walk refers to: a pfn or a device-private offset.
///
/// Kernel: the pair (`unsigned long pfn`, `PVMW_DEVICE_PRIVATE` /
/// `MIGRATE_PFN_DEVICE_PRIVATE` / `HMM_PFN_DEVICE_PRIVATE` flag, v6).
///
/// # Differences from the kernel
///
/// The kernel stores the number and the flag separately and must compare
/// both (`device_private != (bool)(pvmw->flags & PVMW_DEVICE_PRIVATE)`); here
/// the kind is part of the value, so a comparison across kinds is simply
/// "not equal".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageFrame {
    /// A page in the CPU physical address space.
    Pfn(Pfn),
    /// A page in the device-private address space.
    DevicePrivate(DevicePrivateOffset),
}

impl PageFrame {
    /// `true` for a device-private offset.
    ///
    /// Kernel: `is_device_private_page()` on the page it names; the
    /// `*_DEVICE_PRIVATE` flag bits (v6).
    pub const fn is_device_private(self) -> bool {
        matches!(self, PageFrame::DevicePrivate(_))
    }

    /// The raw index, whatever its space. For kernel-exact encoders only:
    /// the result has lost its kind.
    pub const fn raw_index(self) -> u64 {
        match self {
            PageFrame::Pfn(p) => p.get(),
            PageFrame::DevicePrivate(o) => o.get(),
        }
    }

    /// The frame `n` pages further on, in the same space.
    pub const fn checked_add(self, n: PageCount) -> Option<PageFrame> {
        match self {
            PageFrame::Pfn(p) => match p.checked_add(n) {
                Some(p) => Some(PageFrame::Pfn(p)),
                None => None,
            },
            PageFrame::DevicePrivate(o) => match o.checked_add(n) {
                Some(o) => Some(PageFrame::DevicePrivate(o)),
                None => None,
            },
        }
    }
}

impl From<Pfn> for PageFrame {
    fn from(p: Pfn) -> Self {
        PageFrame::Pfn(p)
    }
}

impl From<DevicePrivateOffset> for PageFrame {
    fn from(o: DevicePrivateOffset) -> Self {
        PageFrame::DevicePrivate(o)
    }
}

/// `true` if `[a, a + a_nr)` and `[b, b + b_nr)` share a page, computed
/// without overflow. Empty ranges overlap nothing.
///
/// Kernel: the overlap tests in `check_pte()` / `check_pmd()`,
/// `mm/page_vma_mapped.c`, which are written to avoid overflow (main).
pub fn ranges_overlap<I: PageIndex>(a: I, a_nr: PageCount, b: I, b_nr: PageCount) -> bool {
    let (a, b) = (a.index(), b.index());
    if a_nr.is_zero() || b_nr.is_zero() {
        return false;
    }
    // `a` lies at or after `b`: overlap iff `a` is inside b's range.
    // `a` lies before `b`: overlap iff `b` is inside a's range.
    if a >= b {
        a - b < b_nr.get()
    } else {
        b - a < a_nr.get()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn page_and_byte_conversions_are_named_and_checked() {
        let off = DevicePrivateOffset::new(3);
        let addr = off.to_addr().unwrap();
        assert_eq!(addr.get(), 3 * PAGE_SIZE);
        assert_eq!(addr.to_offset(), off);
        assert_eq!(DevicePrivateAddr::new(3 * PAGE_SIZE + 17).to_offset(), off);
        assert_eq!(DevicePrivateAddr::new(17).offset_in_page(), 17);
        assert_eq!(
            DevicePrivateOffset::new(u64::MAX >> 12)
                .to_addr()
                .map(|a| a.get()),
            Some(PAGE_MASK)
        );
        assert_eq!(
            DevicePrivateOffset::new((u64::MAX >> 12) + 1).to_addr(),
            None
        );
        assert_eq!(Pfn::new(7).to_phys_addr(), Some(PhysAddr::new(7 << 12)));
        assert_eq!(PhysAddr::new(0x1fff).to_pfn(), Pfn::new(1));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Pfn::new(u64::MAX).checked_add(PageCount::ONE), None);
        assert_eq!(Pfn::new(0).checked_sub(PageCount::ONE), None);
        assert_eq!(
            Pfn::new(10).checked_offset_from(Pfn::new(4)),
            Some(PageCount::new(6))
        );
        assert_eq!(Pfn::new(4).checked_offset_from(Pfn::new(10)), None);
        assert_eq!(
            Pfn::new(5).checked_align_up(PageCount::new(4)),
            Some(Pfn::new(8))
        );
        assert_eq!(
            Pfn::new(5).checked_align_up(PageCount::new(3)),
            None,
            "not a power of two"
        );
        assert_eq!(Pfn::new(u64::MAX).checked_align_up(PageCount::new(2)), None);
        assert_eq!(PageCount::new(u64::MAX).checked_bytes(), None);
        assert_eq!(PageCount::from_bytes_round_up(4097), PageCount::new(2));
        assert!(DevicePrivateOffset::new(1024).is_aligned(Order::HPAGE_PMD));
        assert!(!DevicePrivateOffset::new(1025).is_aligned(Order::HPAGE_PMD));
        assert_eq!(
            PhysAddr::new(1).checked_align_up(4096),
            Some(PhysAddr::new(4096))
        );
        assert_eq!(PhysAddr::new(1).checked_align_up(3), None);
    }

    #[test]
    fn orders() {
        assert_eq!(Order::HPAGE_PMD.get(), crate::consts::HPAGE_PMD_ORDER);
        assert_eq!(Order::HPAGE_PMD.nr_pages(), PageCount::new(512));
        assert_eq!(Order::new(63).map(|o| o.nr_pages().get()), Some(1 << 63));
        assert_eq!(Order::new(64), None);
    }

    #[test]
    fn page_frames_carry_their_space() {
        let a = PageFrame::from(Pfn::new(7));
        let b = PageFrame::from(DevicePrivateOffset::new(7));
        assert_ne!(a, b, "same number, different spaces");
        assert_eq!(a.raw_index(), b.raw_index());
        assert!(b.is_device_private() && !a.is_device_private());
        assert_eq!(
            b.checked_add(PageCount::ONE),
            Some(PageFrame::DevicePrivate(DevicePrivateOffset::new(8)))
        );
    }

    #[test]
    fn overlap_is_overflow_safe() {
        let p = Pfn::new;
        let n = PageCount::new;
        assert!(ranges_overlap(p(0), n(1), p(0), n(1)));
        assert!(!ranges_overlap(p(0), n(1), p(1), n(1)));
        assert!(ranges_overlap(p(5), n(1), p(0), n(6)));
        assert!(!ranges_overlap(p(6), n(1), p(0), n(6)));
        assert!(!ranges_overlap(p(3), n(0), p(0), n(10)), "empty range");
        // Near the top of the space a naive `a + n > b` would overflow.
        assert!(ranges_overlap(
            p(u64::MAX),
            n(1),
            p(u64::MAX - 1),
            n(u64::MAX)
        ));
        assert!(!ranges_overlap(
            p(u64::MAX - 1),
            n(1),
            p(u64::MAX),
            n(u64::MAX)
        ));
    }
}
