//! `madvise()`: the advice the HMM selftests give.
//!
//! Kernel: `mm/madvise.c` (`do_madvise()`, `madvise_dontneed_free()`,
//! `madvise_free_pte_range()`, `hugepage_madvise()`), `mm/huge_memory.c`
//! (`madvise_free_huge_pmd()`) (main).
//!
//! | advice | effect |
//! |---|---|
//! | `MADV_DONTNEED` | zap the range: every page, device-private and device-exclusive entry is unmapped (a private anon range then reads zeros; a file range refaults from the page cache) |
//! | `MADV_FREE` | private anon only: clean the dirty bit of exclusively mapped present pages (whole huge PMDs included); device-private, device-exclusive and migration entries, PTE or PMD, are left alone |
//! | `MADV_HUGEPAGE` / `MADV_NOHUGEPAGE` | set `VM_HUGEPAGE` / `VM_NOHUGEPAGE` (clearing the other), splitting and merging VMAs |
//!
//! # Differences from the kernel
//!
//! There is no reclaim, so a page freed lazily by `MADV_FREE` is never
//! actually discarded: its data stays (one of the outcomes the kernel
//! allows). A partly covered huge PMD is split for `MADV_FREE` (the kernel
//! splits the folio).

use crate::mm_types::{Mm, MmapWriteGuard, VmFlags, Vma};
use crate::mmap::user_range;
use crate::mprotect::{covered, split_leaf_pmd_at};
use crate::pgtable::{_PAGE_DIRTY, PMD_SIZE, Pmd, Pte};
use devpriv_core::{Errno, PAGE_SIZE};

/// The advice [`MmapWriteGuard::madvise`] takes.
///
/// Kernel: `MADV_*`, `include/uapi/asm-generic/mman-common.h` (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Advice {
    /// Kernel: `MADV_DONTNEED` (4) (main).
    DontNeed,
    /// Kernel: `MADV_FREE` (8) (main).
    Free,
    /// Kernel: `MADV_HUGEPAGE` (14) (main).
    HugePage,
    /// Kernel: `MADV_NOHUGEPAGE` (15) (main).
    NoHugePage,
}

impl Advice {
    /// The advice for a `madvise()` value; `None` for one the model does
    /// not act on.
    ///
    /// Kernel: the `behavior` argument of `madvise()` (main).
    pub const fn from_raw(v: i32) -> Option<Advice> {
        match v {
            4 => Some(Advice::DontNeed),
            8 => Some(Advice::Free),
            14 => Some(Advice::HugePage),
            15 => Some(Advice::NoHugePage),
            _ => None,
        }
    }
}

impl MmapWriteGuard<'_> {
    /// Applies `advice` to `[start, start + len)` (`len` rounded up to
    /// pages; see the module table).
    ///
    /// Kernel: `madvise(start, len, advice)` → `do_madvise()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an unaligned `start`, a zero `len` or a range
    /// past `TASK_SIZE`, or `MADV_FREE` on a mapping that is not private
    /// anonymous memory; [`Errno::ENOMEM`] if part of the range is not
    /// mapped (the mapped parts are still advised, as in the kernel).
    pub fn madvise(&mut self, start: u64, len: u64, advice: Advice) -> Result<(), Errno> {
        let end = user_range(start, len.next_multiple_of(PAGE_SIZE))?;
        let hole = !covered(self, start, end);
        let parts: Vec<Vma> = self
            .vmas()
            .iter()
            .filter(|v| v.start < end && start < v.end)
            .cloned()
            .collect();
        match advice {
            Advice::DontNeed => {
                for v in &parts {
                    self.zap_page_range(v.start.max(start), v.end.min(end))?;
                }
            }
            Advice::Free => {
                if parts
                    .iter()
                    .any(|v| !v.is_anonymous() || !v.is_cow_mapping())
                {
                    return Err(Errno::EINVAL);
                }
                split_leaf_pmd_at(self, start)?;
                split_leaf_pmd_at(self, end)?;
                for v in &parts {
                    madvise_free(self, v.start.max(start), v.end.min(end))?;
                }
            }
            Advice::HugePage | Advice::NoHugePage => {
                let (set, clear) = if advice == Advice::HugePage {
                    (VmFlags::HUGEPAGE, VmFlags::NOHUGEPAGE)
                } else {
                    (VmFlags::NOHUGEPAGE, VmFlags::HUGEPAGE)
                };
                split_leaf_pmd_at(self, start)?;
                split_leaf_pmd_at(self, end)?;
                self.split_at(start, end);
                let vmas = self
                    .vmas()
                    .iter()
                    .map(|v| {
                        if v.start >= start && v.end <= end {
                            Vma {
                                flags: v.flags.without(clear).union(set),
                                ..v.clone()
                            }
                        } else {
                            v.clone()
                        }
                    })
                    .collect();
                self.set_vmas(vmas);
                self.merge_all();
            }
        }
        if hole {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }
}

/// Kernel: `madvise_free_pte_range()` and `madvise_free_huge_pmd()` (main).
fn madvise_free(mm: &Mm, start: u64, end: u64) -> Result<(), Errno> {
    let sys = mm.memory().sys();
    let exclusive = |pfn| {
        sys.pfn_folio(pfn)
            .is_some_and(|f| f.mapping() != 0 && f.refcount() == f.mapcount())
    };
    let mut addr = start;
    while addr < end {
        let next = ((addr & !(PMD_SIZE - 1)) + PMD_SIZE).min(end);
        match mm.pmdp_get_lockless(addr) {
            Some(p)
                if p.is_trans_huge() && !sys.is_huge_zero_pfn(p.pfn()) && exclusive(p.pfn()) =>
            {
                let g = mm.pmd_lock(addr)?;
                if g.get() == p {
                    g.set(Pmd::from_raw(p.raw() & !_PAGE_DIRTY))?;
                }
            }
            Some(p) if p.is_trans_huge() => {}
            Some(p) if p.is_table() => {
                let g = mm.pte_offset_map_lock(addr)?;
                let mut a = addr;
                while a < next {
                    let pte = g.get_at(a)?;
                    // Non-present entries (device-private, device-exclusive,
                    // migration) are skipped: `!pte_present()` → continue.
                    if pte.is_present() && !sys.is_zero_pfn(pte.pfn()) && exclusive(pte.pfn()) {
                        g.set_at(a, Pte::from_raw(pte.raw() & !_PAGE_DIRTY))?;
                    }
                    a += PAGE_SIZE;
                }
            }
            // None, or a non-present PMD (device-private, migration): left
            // alone.
            _ => {}
        }
        addr = next;
    }
    Ok(())
}
