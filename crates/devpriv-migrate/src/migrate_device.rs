//! Device migration: the `MIGRATE_PFN_*` encoding of `migrate_vma::src/dst`.
//!
//! Kernel: `include/linux/migrate.h` (`MIGRATE_PFN_*`, `migrate_pfn()`,
//! `migrate_pfn_to_page()`), series v6 patches 01/13, 03/13, 04/13;
//! `mm/migrate_device.c` (the migration flow, to come in this module).
//!
//! An mpfn is `index << 6 | flags`. The series adds
//! `MIGRATE_PFN_DEVICE_PRIVATE` (bit 5): with it, the index is a
//! device-private offset, not a pfn. [`MigratePfn`] keeps the kernel bits
//! and decodes to a typed [`PageFrame`].

use core::fmt;
use devpriv_core::{DevicePrivateOffset, Errno, PageCount, PageFrame, Pfn};

/// An entry of `migrate_vma::src` / `dst`: a frame plus `MIGRATE_PFN_*`
/// flags.
///
/// Kernel: `unsigned long` mpfn, `include/linux/migrate.h`.
///
/// # Invariants
///
/// Bit 2 (unused by the kernel) is clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct MigratePfn(u64);

impl fmt::Debug for MigratePfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MigratePfn({:#x}, {:?})", self.0, self.frame())
    }
}

impl MigratePfn {
    /// Kernel: `MIGRATE_PFN_VALID` (bit 0).
    pub const VALID: u64 = 1 << 0;
    /// Kernel: `MIGRATE_PFN_MIGRATE` (bit 1).
    pub const MIGRATE: u64 = 1 << 1;
    /// Kernel: `MIGRATE_PFN_WRITE` (bit 3).
    pub const WRITE: u64 = 1 << 3;
    /// Kernel: `MIGRATE_PFN_COMPOUND` (bit 4).
    pub const COMPOUND: u64 = 1 << 4;
    /// The index is a device-private offset.
    ///
    /// Kernel: `MIGRATE_PFN_DEVICE_PRIVATE` (bit 5, series 04/13).
    pub const DEVICE_PRIVATE: u64 = 1 << 5;
    /// Kernel: `MIGRATE_PFN_SHIFT` (6).
    pub const SHIFT: u32 = 6;
    /// Every defined flag bit.
    ///
    /// Kernel: none (model only).
    pub const FLAGS: u64 =
        Self::VALID | Self::MIGRATE | Self::WRITE | Self::COMPOUND | Self::DEVICE_PRIVATE;
    /// Largest index an mpfn can hold (2^58 - 1).
    ///
    /// Kernel: none (model only).
    pub const MAX_INDEX: u64 = (1 << (64 - Self::SHIFT)) - 1;

    /// The empty entry (0): not valid, nothing to migrate.
    ///
    /// Kernel: none (model only).
    pub const NONE: MigratePfn = MigratePfn(0);

    /// A valid mpfn for `frame`, with `DEVICE_PRIVATE` set for a
    /// device-private offset.
    ///
    /// Kernel: `migrate_pfn(pfn)` and the series' `migrate_pfn_from_page()`
    /// (01/13).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index is above [`MigratePfn::MAX_INDEX`]
    /// (C would shift its top bits out).
    pub const fn new(frame: PageFrame) -> Result<MigratePfn, Errno> {
        let raw = frame.raw_index();
        if raw > Self::MAX_INDEX {
            return Err(Errno::EINVAL);
        }
        let dp = if frame.is_device_private() {
            Self::DEVICE_PRIVATE
        } else {
            0
        };
        Ok(MigratePfn((raw << Self::SHIFT) | Self::VALID | dp))
    }

    /// An mpfn from its raw value.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if bit 2 (undefined) is set.
    ///
    /// Kernel: none (model only).
    pub const fn from_raw(val: u64) -> Result<MigratePfn, Errno> {
        if val & ((1 << Self::SHIFT) - 1) & !Self::FLAGS != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(MigratePfn(val))
    }

    /// The raw value.
    ///
    /// Kernel: none (model only).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The flag bits.
    ///
    /// Kernel: none (model only).
    pub const fn flags(self) -> u64 {
        self.0 & Self::FLAGS
    }

    /// `true` if every bit of `flags` is set.
    ///
    /// Kernel: none (model only).
    pub const fn contains(self, flags: u64) -> bool {
        self.0 & flags == flags
    }

    /// The same mpfn with `flags` set.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `flags` has bits outside
    /// `VALID | MIGRATE | WRITE | COMPOUND` (`DEVICE_PRIVATE` comes from the
    /// frame only).
    ///
    /// Kernel: none (model only).
    pub const fn with(self, flags: u64) -> Result<MigratePfn, Errno> {
        if flags & !(Self::FLAGS & !Self::DEVICE_PRIVATE) != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(MigratePfn(self.0 | flags))
    }

    /// The same mpfn with `flags` cleared (`DEVICE_PRIVATE` cannot be
    /// cleared: it says what the index is).
    ///
    /// Kernel: none (model only).
    #[must_use]
    pub const fn without(self, flags: u64) -> MigratePfn {
        MigratePfn(self.0 & !(flags & !Self::DEVICE_PRIVATE))
    }

    /// The frame, or `None` unless `VALID`.
    ///
    /// Kernel: `migrate_pfn_to_page()` after the series (offset lookup when
    /// `MIGRATE_PFN_DEVICE_PRIVATE`, else `pfn_to_page(mpfn >> 6)`), without
    /// the page lookup.
    pub const fn frame(self) -> Option<PageFrame> {
        if self.0 & Self::VALID == 0 {
            return None;
        }
        let raw = self.0 >> Self::SHIFT;
        Some(if self.0 & Self::DEVICE_PRIVATE != 0 {
            PageFrame::DevicePrivate(DevicePrivateOffset::new(raw))
        } else {
            PageFrame::Pfn(Pfn::new(raw))
        })
    }

    /// The mpfn `n` pages further on, keeping every flag bit: how
    /// `migrate_device_range()` steps through its range.
    ///
    /// Kernel: `start_mpfn + (i << MIGRATE_PFN_SHIFT)` (series 03/13).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index would pass [`MigratePfn::MAX_INDEX`].
    pub const fn checked_add(self, n: PageCount) -> Result<MigratePfn, Errno> {
        let raw = self.0 >> Self::SHIFT;
        match raw.checked_add(n.get()) {
            Some(i) if i <= Self::MAX_INDEX => Ok(MigratePfn(
                (i << Self::SHIFT) | (self.0 & ((1 << Self::SHIFT) - 1)),
            )),
            _ => Err(Errno::EINVAL),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_series() {
        assert_eq!(MigratePfn::DEVICE_PRIVATE, 32);
        assert_eq!(MigratePfn::SHIFT, 6);
        let m = MigratePfn::new(DevicePrivateOffset::new(3).into()).unwrap();
        assert_eq!(m.raw(), (3 << 6) | 1 | 32);
        let p = MigratePfn::new(Pfn::new(3).into()).unwrap();
        assert_eq!(p.raw(), (3 << 6) | 1);
        assert_ne!(m.frame(), p.frame());
    }

    #[test]
    fn range_steps_keep_device_private() {
        let m = MigratePfn::new(DevicePrivateOffset::new(10).into())
            .unwrap()
            .with(MigratePfn::MIGRATE)
            .unwrap();
        let n = m.checked_add(PageCount::new(5)).unwrap();
        assert_eq!(
            n.frame(),
            Some(PageFrame::DevicePrivate(DevicePrivateOffset::new(15)))
        );
        assert!(n.contains(MigratePfn::MIGRATE | MigratePfn::DEVICE_PRIVATE));
        assert_eq!(
            MigratePfn::new(Pfn::new(MigratePfn::MAX_INDEX).into())
                .unwrap()
                .checked_add(PageCount::ONE),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            MigratePfn::new(Pfn::new(1 << 58).into()),
            Err(Errno::EINVAL)
        );
        assert_eq!(MigratePfn::from_raw(4), Err(Errno::EINVAL));
        assert_eq!(
            MigratePfn::NONE.with(MigratePfn::DEVICE_PRIVATE),
            Err(Errno::EINVAL)
        );
        assert_eq!(MigratePfn::NONE.frame(), None);
        let dp = MigratePfn::new(DevicePrivateOffset::new(1).into()).unwrap();
        assert!(
            dp.without(MigratePfn::DEVICE_PRIVATE)
                .contains(MigratePfn::DEVICE_PRIVATE)
        );
    }
}
