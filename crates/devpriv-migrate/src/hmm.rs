//! `hmm_range_fault()` output encoding: `HMM_PFN_*`.
//!
//! Kernel: `include/linux/hmm.h` (`enum hmm_pfn_flags`, `hmm_pfn_to_page()`,
//! `hmm_pfn_to_map_order()`), `mm/hmm.c`; series v6 patch 12/13.
//!
//! An HMM pfn keeps flags in its top 12 bits (series; 11 in mainline) and
//! the pfn — or, with `HMM_PFN_DEVICE_PRIVATE`, a device-private offset —
//! below. The series moved the 5-bit map-order field down one bit
//! (`HMM_PFN_ORDER_SHIFT` 53 → 52) to make room for `DEVICE_PRIVATE` at bit
//! 57; the v1 posting left the order at 53 and the two collided (hazard H9,
//! [`HmmPfnLayout::V1_COLLIDING`]).

use core::fmt;
use devpriv_core::{DevicePrivateOffset, Errno, Order, PageFrame, Pfn};

/// A bit layout of HMM pfns: where the order field starts and which bit
/// (if any) says "device private".
///
/// Kernel: the `HMM_PFN_*` constants of `include/linux/hmm.h` in three
/// versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HmmPfnLayout {
    /// Kernel: `HMM_PFN_ORDER_SHIFT`.
    pub order_shift: u32,
    /// Kernel: `HMM_PFN_DEVICE_PRIVATE` (0 when the layout has none).
    pub device_private: u64,
}

impl HmmPfnLayout {
    /// Mainline 7.0: order at bits 53–57, no device-private bit.
    ///
    /// Kernel: none (model only).
    pub const MAINLINE: HmmPfnLayout = HmmPfnLayout {
        order_shift: 53,
        device_private: 0,
    };
    /// The series' v1 posting: `DEVICE_PRIVATE` at bit 57 while the order
    /// field still covered bits 53–57. Broken; kept for hazard H9.
    ///
    /// Kernel: none (model only).
    pub const V1_COLLIDING: HmmPfnLayout = HmmPfnLayout {
        order_shift: 53,
        device_private: 1 << 57,
    };
    /// Series v2+ (12/13): order at bits 52–56, `DEVICE_PRIVATE` at 57.
    ///
    /// Kernel: none (model only).
    pub const SERIES: HmmPfnLayout = HmmPfnLayout {
        order_shift: 52,
        device_private: 1 << 57,
    };

    /// Mask of all flag bits: every bit from `order_shift` up.
    ///
    /// Kernel: `HMM_PFN_FLAGS`.
    pub const fn flags_mask(self) -> u64 {
        !((1 << self.order_shift) - 1)
    }

    /// Encodes a valid entry. The layout is applied as written: a layout
    /// whose fields overlap produces a value that decodes differently.
    ///
    /// Kernel: what `hmm_vma_handle_pte()` / `hmm_vma_handle_pmd()` /
    /// `hmm_vma_handle_absent_pmd()` store (`pfn | HMM_PFN_VALID |
    /// [WRITE] | [DEVICE_PRIVATE] | order << ORDER_SHIFT`).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index reaches into the flag bits, the order
    /// exceeds the 5-bit field (31), or the frame is device-private and the
    /// layout has no device-private bit.
    pub const fn encode(self, frame: PageFrame, order: Order, write: bool) -> Result<u64, Errno> {
        let raw = frame.raw_index();
        if raw & self.flags_mask() != 0
            || (order.get() as u64) > HMM_PFN_ORDER_MASK
            || (frame.is_device_private() && self.device_private == 0)
        {
            return Err(Errno::EINVAL);
        }
        let mut v = raw | HmmPfn::VALID | ((order.get() as u64) << self.order_shift);
        if write {
            v |= HmmPfn::WRITE;
        }
        if frame.is_device_private() {
            v |= self.device_private;
        }
        Ok(v)
    }

    /// Decodes `(frame, order, write)`; `None` unless `HMM_PFN_VALID`.
    ///
    /// Kernel: `hmm_pfn_to_page()` (`pfn_to_page(hmm_pfn & ~HMM_PFN_FLAGS)`,
    /// an offset lookup with `HMM_PFN_DEVICE_PRIVATE`) and
    /// `hmm_pfn_to_map_order()`.
    pub const fn decode(self, v: u64) -> Option<(PageFrame, Order, bool)> {
        if v & HmmPfn::VALID == 0 {
            return None;
        }
        let raw = v & !self.flags_mask();
        let frame = if self.device_private != 0 && v & self.device_private != 0 {
            PageFrame::DevicePrivate(DevicePrivateOffset::new(raw))
        } else {
            PageFrame::Pfn(Pfn::new(raw))
        };
        // INVARIANT: a 5-bit field is below 64.
        let order = match Order::new(((v >> self.order_shift) & HMM_PFN_ORDER_MASK) as u32) {
            Some(o) => o,
            None => Order::ZERO,
        };
        Some((frame, order, v & HmmPfn::WRITE != 0))
    }
}

/// Mask of the map-order field after shifting (5 bits).
///
/// Kernel: the `0x1F` in `hmm_pfn_to_map_order()`.
pub const HMM_PFN_ORDER_MASK: u64 = 0x1f;

/// One output entry of `hmm_range_fault()`, with the series layout.
///
/// Kernel: `unsigned long hmm_pfns[]` entries, `include/linux/hmm.h`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct HmmPfn(u64);

impl fmt::Debug for HmmPfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmmPfn({:#x}, {:?})", self.0, self.decode())
    }
}

impl HmmPfn {
    /// Kernel: `HMM_PFN_VALID` (bit 63).
    pub const VALID: u64 = 1 << 63;
    /// Kernel: `HMM_PFN_WRITE` (bit 62).
    pub const WRITE: u64 = 1 << 62;
    /// Kernel: `HMM_PFN_ERROR` (bit 61).
    pub const ERROR: u64 = 1 << 61;
    /// Kernel: `HMM_PFN_DMA_MAPPED` (bit 60, sticky).
    pub const DMA_MAPPED: u64 = 1 << 60;
    /// Kernel: `HMM_PFN_P2PDMA` (bit 59, sticky).
    pub const P2PDMA: u64 = 1 << 59;
    /// Kernel: `HMM_PFN_P2PDMA_BUS` (bit 58, sticky).
    pub const P2PDMA_BUS: u64 = 1 << 58;
    /// Kernel: `HMM_PFN_DEVICE_PRIVATE` (bit 57, series 12/13).
    pub const DEVICE_PRIVATE: u64 = HmmPfnLayout::SERIES.device_private;
    /// Kernel: `HMM_PFN_ORDER_SHIFT` (52 with the series).
    pub const ORDER_SHIFT: u32 = HmmPfnLayout::SERIES.order_shift;
    /// Kernel: `HMM_PFN_FLAGS` (the top 12 bits with the series).
    pub const FLAGS: u64 = HmmPfnLayout::SERIES.flags_mask();
    /// Kernel: `HMM_PFN_REQ_FAULT` (= `HMM_PFN_VALID`), an input flag.
    pub const REQ_FAULT: u64 = Self::VALID;
    /// Kernel: `HMM_PFN_REQ_WRITE` (= `HMM_PFN_WRITE`), an input flag.
    pub const REQ_WRITE: u64 = Self::WRITE;

    /// A valid entry for `frame` mapped at `order`.
    ///
    /// Kernel: see [`HmmPfnLayout::encode`].
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index is 2^52 or more, or the order above 31.
    pub const fn new(frame: PageFrame, order: Order, write: bool) -> Result<HmmPfn, Errno> {
        match HmmPfnLayout::SERIES.encode(frame, order, write) {
            Ok(v) => Ok(HmmPfn(v)),
            Err(e) => Err(e),
        }
    }

    /// The error entry.
    ///
    /// Kernel: `HMM_PFN_ERROR`.
    pub const ERROR_ENTRY: HmmPfn = HmmPfn(Self::ERROR);

    /// An entry from its raw value (any value is accepted).
    ///
    /// Kernel: none (model only).
    pub const fn from_raw(v: u64) -> HmmPfn {
        HmmPfn(v)
    }

    /// The raw value.
    ///
    /// Kernel: none (model only).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `(frame, order, write)`, or `None` unless valid.
    ///
    /// Kernel: `hmm_pfn_to_page()`, `hmm_pfn_to_map_order()`.
    pub const fn decode(self) -> Option<(PageFrame, Order, bool)> {
        HmmPfnLayout::SERIES.decode(self.0)
    }

    /// The frame, or `None` unless valid.
    ///
    /// Kernel: `hmm_pfn_to_page()` / `hmm_pfn_to_phys()`, typed.
    pub const fn frame(self) -> Option<PageFrame> {
        match self.decode() {
            Some((f, _, _)) => Some(f),
            None => None,
        }
    }

    /// The map order (0 unless valid).
    ///
    /// Kernel: `hmm_pfn_to_map_order()`.
    pub const fn map_order(self) -> Order {
        match self.decode() {
            Some((_, o, _)) => o,
            None => Order::ZERO,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn series_constants() {
        assert_eq!(HmmPfn::DEVICE_PRIVATE, 1 << 57);
        assert_eq!(HmmPfn::ORDER_SHIFT, 52);
        assert_eq!(HmmPfn::FLAGS, 0xfff0_0000_0000_0000);
        assert_eq!(HmmPfnLayout::MAINLINE.flags_mask(), 0xffe0_0000_0000_0000);
        let v = HmmPfn::new(DevicePrivateOffset::new(5).into(), Order::HPAGE_PMD, true).unwrap();
        assert_eq!(v.raw(), (1 << 63) | (1 << 62) | (1 << 57) | (9 << 52) | 5);
        assert_eq!(v.map_order(), Order::HPAGE_PMD);
    }

    #[test]
    fn encoder_refuses_what_does_not_fit() {
        assert_eq!(
            HmmPfn::new(Pfn::new(1 << 52).into(), Order::ZERO, false),
            Err(Errno::EINVAL)
        );
        assert!(HmmPfn::new(Pfn::new((1 << 52) - 1).into(), Order::ZERO, false).is_ok());
        assert_eq!(
            HmmPfn::new(Pfn::new(1).into(), Order::new(32).unwrap(), false),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            HmmPfnLayout::MAINLINE.encode(DevicePrivateOffset::new(1).into(), Order::ZERO, false),
            Err(Errno::EINVAL)
        );
        assert_eq!(HmmPfn::ERROR_ENTRY.frame(), None);
    }
}
