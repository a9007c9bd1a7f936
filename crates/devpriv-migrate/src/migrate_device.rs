//! Device migration: the flow that moves pages between system RAM and
//! device-private memory, filling the [`MigrateVma`] arrays of
//! [`migrate`](crate::migrate).
//!
//! Kernel: `mm/migrate_device.c` (`migrate_vma_setup()`,
//! `migrate_vma_pages()`, `migrate_vma_finalize()`,
//! `migrate_device_range()`, `migrate_device_pfns()`,
//! `migrate_device_pages()`, `migrate_device_finalize()`), v6 proposal
//! patches 03/13 and 04/13.
//!
//! # The flow (7.0)
//!
//! 1. [`migrate_vma_setup`] collects the range (`src[i]` = the page mapped
//!    at `start + i * PAGE_SIZE` with `MIGRATE`, or `MIGRATE` alone for a
//!    hole), locks each page, replaces its mapping with a migration entry
//!    and drops pinned pages again.
//! 2. The driver allocates a locked destination for each `MIGRATE` entry,
//!    copies the data and fills `dst`.
//! 3. [`migrate_vma_pages`] moves `mapping`/`index` to the destinations
//!    (and inserts holes), splitting a compound source whose destination
//!    is not compound.
//! 4. [`migrate_vma_finalize`] points the migration entries at the
//!    destinations (or back at the sources), unlocks and drops references.
//!
//! Eviction without a VMA uses [`migrate_device_range`] /
//! [`migrate_device_pfns`], then [`migrate_device_pages`] and
//! [`migrate_device_finalize`].
//!
//! # Differences from the kernel
//!
//! - The rmap walk covers the one [`Mm`] the caller names (a
//!   `MigrateVma`'s, or an explicit one for `migrate_device_*`); the
//!   machine's memory is that `Mm`'s (or, for [`migrate_device_pages`],
//!   which has no address space, the [`Memory`] passed).
//! - `folio_lock()` where the kernel sleeps is a trylock that gives up (the
//!   page is skipped, as for a failed `folio_trylock()`).
//! - No LRU isolation, swap cache, memcg charge, MMU notifier, TLB flush,
//!   huge zero page, `PageAnonExclusive`, soft-dirty or uffd-wp; only
//!   anonymous private VMAs exist. The 4 KiB zero page is collected as a
//!   hole (`MIGRATE` without a page) and replaced on insertion.
//! - When a compound source is split for small destinations, the kernel
//!   applies the fault page's extra reference (`extra_cnt`) to all 512
//!   pieces; the model applies it only to the piece that holds the fault
//!   page (with the kernel's rule every other piece of a faulting THP would
//!   fail `folio_migrate_mapping()` with `-EAGAIN`; **unconfirmed** whether
//!   the kernel's own reference counts make that rule right there).

use crate::huge_memory::{split_folio, split_huge_pmd, split_unmapped_for_migration};
use crate::leafops::Softleaf;
use crate::memory_model::Memory;
use crate::migrate::{MigratePfn, MigrateVma, MigrateVmaFlags, PMD_NR, flags_only, or};
use crate::mm::{AnyFolio, frame_to_folio};
use crate::mm_types::{CollectPteGuard, HugeInsertErrors, Mm, MmConfig, VmFlags, Vma};
use crate::pgtable::{
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PMD_SIZE, Pmd, Pte,
};
use crate::pgtable_generic::PmdGuard;
use crate::rmap::{
    pmd_to_migration_entry, pte_to_migration_entry, remove_migration_ptes, try_to_migrate,
};
use crate::swapops::make_device_private_entry;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::{
    DevicePrivateOffset, Errno, Order, PAGE_SHIFT, PAGE_SIZE, PageCount, PageFrame, warn_on,
    warn_on_once,
};
use devpriv_pagemap::SpaceReadGuard;

/// Collection: how `migrate_vma_collect()` fills `src`.
impl MigrateVma<'_> {
    fn push(&mut self, m: MigratePfn) {
        let Ok(i) = usize::try_from(self.npages) else {
            return;
        };
        if let (Some(s), Some(d)) = (self.src.get_mut(i), self.dst.get_mut(i)) {
            *s = m;
            *d = MigratePfn::NONE;
            self.npages += 1;
        }
    }

    /// `migrate_vma_collect_skip()`.
    fn skip(&mut self, start: u64, end: u64) {
        let mut a = start;
        while a < end {
            self.push(MigratePfn::NONE);
            a += PAGE_SIZE;
        }
    }

    /// `migrate_vma_collect_hole()` (every VMA is anonymous).
    fn hole(&mut self, start: u64, end: u64) {
        if self.mm.config().thp_migration
            && self.flags.contains(MigrateVmaFlags::SELECT_COMPOUND)
            && start.is_multiple_of(PMD_SIZE)
            && end.is_multiple_of(PMD_SIZE)
        {
            self.push(flags_only(MigratePfn::MIGRATE | MigratePfn::COMPOUND));
            self.cpages += 1;
            self.skip(start + PAGE_SIZE, end);
            return;
        }
        let mut a = start;
        while a < end {
            self.push(flags_only(MigratePfn::MIGRATE));
            self.cpages += 1;
            a += PAGE_SIZE;
        }
    }
}

/// The folio backing an mpfn's frame, and the page's index in it.
fn mpfn_folio<'g>(
    mem: &'g Memory,
    guard: &'g SpaceReadGuard<'_>,
    m: MigratePfn,
) -> Option<(AnyFolio<'g>, u64)> {
    frame_to_folio(mem.sys(), guard, m.frame()?)
}

/// The folio of the fault page, if any.
fn fault_folio<'g>(
    guard: &'g SpaceReadGuard<'_>,
    fault_page: Option<DevicePrivateOffset>,
) -> Option<AnyFolio<'g>> {
    let off = fault_page?;
    Some(AnyFolio::Dev(
        guard.device_private_offset_to_page(off)?.folio(),
    ))
}

/// Prepares to migrate `args.vma`'s range `[start, end)`: validates the
/// arguments, collects every page into `src` (locking it and replacing its
/// mapping with a migration entry), then unmaps what is left mapped and
/// gives back pinned pages. Returns `Ok` even if nothing can migrate;
/// `cpages` says how many entries are still migrating.
///
/// Kernel: `migrate_vma_setup(args)`, `mm/migrate_device.c`, with
/// `migrate_vma_collect()` (`migrate_vma_collect_pmd()`,
/// `migrate_vma_collect_huge_pmd()`, `migrate_vma_collect_hole()`) and
/// `migrate_vma_unmap()` → `migrate_device_unmap()` (7.0).
///
/// What is collected (7.0):
///
/// | entry | selected when | `src` |
/// |---|---|---|
/// | none PTE / PMD | always (anonymous VMA) | `MIGRATE` (`\|COMPOUND` for an aligned PMD hole with `SELECT_COMPOUND`) |
/// | present PTE, system page | `SELECT_SYSTEM` | pfn `\|MIGRATE [\|WRITE]` |
/// | device-private PTE | `SELECT_DEVICE_PRIVATE` and the pgmap owner is `pgmap_owner` | offset `\|DEVICE_PRIVATE\|MIGRATE [\|WRITE]` |
/// | huge PMD / device-private PMD | as above, with `SELECT_COMPOUND` and a PMD-aligned window | head `\|MIGRATE\|COMPOUND [\|WRITE]`, then 511 empty entries |
///
/// Large folios met at PTE level, or at PMD level without
/// `SELECT_COMPOUND`, are split first (`migrate_vma_split_folio()`).
///
/// # Differences from the kernel
///
/// See the module documentation.
///
/// # Errors
///
/// [`Errno::EINVAL`], nothing changed: `vma` is not one of `mm`'s VMAs;
/// the page-masked range is empty, starts outside the VMA or ends past it;
/// `src` or `dst` is shorter than the range; `fault_page` names no
/// device-private page or one whose folio is not locked.
///
/// # Examples
///
/// One round, moving a page to a new system page (a device driver does
/// the same with a device folio from `zone_device_folio_init()`):
///
/// ```
/// use devpriv_core::{Errno, Order, PAGE_SIZE, PageCount, PageFrame, Pfn};
/// use devpriv_migrate::{
///     FaultFlags, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig, SystemMemory,
///     VmFlags, handle_mm_fault, migrate_vma_finalize, migrate_vma_pages, migrate_vma_setup,
/// };
/// use devpriv_pagemap::DevicePrivateSpace;
/// use std::sync::Arc;
///
/// let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
/// let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
/// let mm = Mm::new(&mem, MmConfig::default());
/// let base = 0x7f00_0000_0000;
/// let vma = mm.mmap_write_lock().mmap_anon(base, PAGE_SIZE, VmFlags::RW)?;
/// handle_mm_fault(&mm, base, FaultFlags::WRITE)?;
/// mm.write_user(base, 42)?;
///
/// let sel = MigrateVmaFlags::SELECT_SYSTEM;
/// let mut args = MigrateVma::new(&mm, &vma, base, base + PAGE_SIZE, sel, None);
/// // 1. Collect, lock and unmap.
/// migrate_vma_setup(&mut args)?;
/// assert_eq!(args.cpages, 1);
/// // 2. The driver: a locked destination per migrating entry, data copied.
/// for (_, src, dst) in args.entries_mut() {
///     let Some(PageFrame::Pfn(old)) = src.frame() else { continue };
///     let new = mem.sys().alloc_folio(Order::ZERO)?;
///     assert!(new.trylock());
///     mem.sys().write(new.pfn(), mem.sys().read(old)?)?;
///     *dst = MigratePfn::new(new.pfn().into())?;
/// }
/// // 3. Move the anon identity; 4. map the destinations, unlock, put.
/// migrate_vma_pages(&mut args);
/// migrate_vma_finalize(&mut args);
/// assert_eq!(mm.read_user(base), Ok(42));
/// assert_eq!(mem.sys().nr_free(), 511, "the old page was freed");
/// # Ok::<(), Errno>(())
/// ```
pub fn migrate_vma_setup(args: &mut MigrateVma<'_>) -> Result<(), Errno> {
    let mm = args.mm;
    let nr_pages = (i128::from(args.end) - i128::from(args.start)) >> PAGE_SHIFT;
    let start = args.start & !(PAGE_SIZE - 1);
    let end = args.end & !(PAGE_SIZE - 1);
    let vma = args.vma;
    if !mm.has_vma(vma) || nr_pages <= 0 {
        return Err(Errno::EINVAL);
    }
    if start < vma.start() || start >= vma.end() || end <= vma.start() || end > vma.end() {
        return Err(Errno::EINVAL);
    }
    let walked = usize::try_from((end - start) >> PAGE_SHIFT).map_err(|_| Errno::EINVAL)?;
    if args.src.len() < walked || args.dst.len() < walked {
        return Err(Errno::EINVAL);
    }
    if let Some(off) = args.fault_page {
        let guard = mm.memory().space().read();
        let page = guard.device_private_offset_to_page(off);
        if page.is_none_or(|p| !p.folio().test_locked()) {
            return Err(Errno::EINVAL);
        }
    }
    args.start = start;
    args.end = end;
    args.src[..walked].fill(MigratePfn::NONE);
    args.dst[..walked].fill(MigratePfn::NONE);
    args.cpages = 0;
    args.npages = 0;
    migrate_vma_collect(args);
    if args.cpages > 0 {
        let n = usize::try_from(args.npages).unwrap_or(0);
        args.cpages = migrate_device_unmap(mm, &mut args.src[..n], args.fault_page);
    }
    Ok(())
}

/// Kernel: `migrate_vma_collect()`: one `migrate_vma_collect_pmd()` per
/// PMD-sized window, then `end` trimmed to what was collected (7.0).
fn migrate_vma_collect(args: &mut MigrateVma<'_>) {
    let mut addr = args.start;
    while addr < args.end {
        let next = ((addr & !(PMD_SIZE - 1)) + PMD_SIZE).min(args.end);
        collect_pmd(args, addr, next);
        addr = next;
    }
    args.end = args.start + (args.npages << PAGE_SHIFT);
}

/// What `migrate_vma_collect_huge_pmd()` tells its caller.
enum Huge {
    /// Collected (or skipped) the whole window: return 0.
    Done,
    /// The PMD changed: `goto again`.
    Again,
    /// Collect at PTE level (`-ENOENT`).
    Fallthrough,
}

/// How many times one window restarts before the model gives up on it
/// (skips it). The kernel retries without bound; a single-threaded model
/// only restarts after its own splits.
const MAX_AGAIN: u32 = 16;

/// Kernel: `migrate_vma_collect_pmd()` (7.0).
fn collect_pmd(args: &mut MigrateVma<'_>, start: u64, end: u64) {
    let mm = args.mm;
    let mem = mm.memory();
    let mode = mm.paging();
    let mut addr = start;
    let mut tries = 0;
    'again: loop {
        tries += 1;
        if tries > MAX_AGAIN {
            args.skip(addr, end);
            return;
        }
        let guard = mem.space().read();
        let fault = fault_folio(&guard, args.fault_page);
        let Some(pmd) = mm.pmdp_get_lockless(addr) else {
            args.skip(addr, end);
            return;
        };
        if pmd.is_none() {
            args.hole(addr, end);
            return;
        }
        if pmd.is_trans_huge() || !pmd.is_present() {
            match collect_huge_pmd(&guard, args, addr, end, fault) {
                Huge::Done => return,
                Huge::Again => continue 'again,
                Huge::Fallthrough => {}
            }
        }
        let g = match mm.pte_offset_map_lock(addr) {
            Ok(g) => g,
            Err(Errno::EFAULT) => {
                args.skip(addr, end);
                return;
            }
            Err(_) => continue 'again,
        };
        while addr < end {
            let Ok(pte) = g.get_at(addr) else {
                args.skip(addr, end);
                return;
            };
            if pte.is_none() {
                args.push(flags_only(MigratePfn::MIGRATE));
                args.cpages += 1;
                addr += PAGE_SIZE;
                continue;
            }
            if pte.is_present() && mem.sys().is_zero_pfn(pte.pfn()) {
                // The zero page migrates like a hole and its PTE stays until
                // `migrate_vma_insert_page()` replaces it.
                if args.flags.contains(MigrateVmaFlags::SELECT_SYSTEM) {
                    args.push(flags_only(MigratePfn::MIGRATE));
                    args.cpages += 1;
                } else {
                    args.push(MigratePfn::NONE);
                }
                addr += PAGE_SIZE;
                continue;
            }
            let frame = if pte.is_present() {
                Some(PageFrame::Pfn(pte.pfn()))
            } else {
                let entry = Softleaf::from_pte(pte);
                entry
                    .is_device_private()
                    .then(|| entry.to_frame(mode))
                    .flatten()
            };
            let found = frame.and_then(|f| Some((f, frame_to_folio(mem.sys(), &guard, f)?)));
            let Some((frame, (folio, n))) = found else {
                args.push(MigratePfn::NONE);
                addr += PAGE_SIZE;
                continue;
            };
            let selected = match folio {
                AnyFolio::Sys(_) => args.flags.contains(MigrateVmaFlags::SELECT_SYSTEM),
                AnyFolio::Dev(df) => {
                    args.flags.contains(MigrateVmaFlags::SELECT_DEVICE_PRIVATE)
                        && df.pgmap().map(|p| p.owner()) == args.pgmap_owner
                        && args.pgmap_owner.is_some()
                }
            };
            if !selected {
                args.push(MigratePfn::NONE);
                addr += PAGE_SIZE;
                continue;
            }
            if folio.is_large() {
                drop(g);
                if migrate_vma_split_folio(mm, folio, args.fault_page).is_err() {
                    args.skip(addr, end);
                    return;
                }
                continue 'again;
            }
            let write = if pte.is_present() {
                pte.is_write()
            } else {
                Softleaf::from_pte(pte).is_device_private_write()
            };
            let Ok(mut mpfn) = MigratePfn::new(frame) else {
                args.push(MigratePfn::NONE);
                addr += PAGE_SIZE;
                continue;
            };
            mpfn = or(
                mpfn,
                MigratePfn::MIGRATE | if write { MigratePfn::WRITE } else { 0 },
            );
            if folio.anon_id().is_none() {
                args.push(MigratePfn::NONE);
                addr += PAGE_SIZE;
                continue;
            }
            folio.get();
            let is_fault = fault == Some(folio);
            if is_fault || folio.trylock() {
                let swp = pte_to_migration_entry(pte, mm.config())
                    .ok()
                    .flatten()
                    .and_then(|(e, _)| Pte::from_swp_entry(e).ok());
                if let Some(swp) = swp
                    && g.set_at(addr, swp).is_ok()
                {
                    args.cpages += 1;
                    // "Set the dirty flag on the folio now the pte is gone."
                    // 7.0 read pte_dirty() of a device-private swap PTE too
                    // (and pte_pfn() for flush_cache_page(), a no-op on
                    // x86): bit 58 of the swap PTE reads as dirty (H20).
                    let guarded = mm.config().collect_pte_guard == CollectPteGuard::Fixed;
                    if (pte.is_present() || !guarded) && pte.is_dirty() {
                        folio.mark_dirty();
                    }
                    let _ = folio.remove_rmap_ptes(n, 1);
                    folio.put();
                } else {
                    if !is_fault {
                        folio.unlock();
                    }
                    folio.put();
                    mpfn = MigratePfn::NONE;
                }
            } else {
                folio.put();
                mpfn = MigratePfn::NONE;
            }
            args.push(mpfn);
            addr += PAGE_SIZE;
        }
        return;
    }
}

/// Kernel: `migrate_vma_collect_huge_pmd()` (7.0).
fn collect_huge_pmd(
    guard: &SpaceReadGuard<'_>,
    args: &mut MigrateVma<'_>,
    start: u64,
    end: u64,
    fault: Option<AnyFolio<'_>>,
) -> Huge {
    let mm = args.mm;
    let mem = mm.memory();
    let mode = mm.paging();
    let Ok(g) = mm.pmd_lock(start) else {
        args.skip(start, end);
        return Huge::Done;
    };
    let pmd = g.get();
    if pmd.is_none() {
        drop(g);
        args.hole(start, end);
        return Huge::Done;
    }
    let (folio, write) = if pmd.is_trans_huge() {
        let found = frame_to_folio(mem.sys(), guard, pmd.pfn().into());
        let (true, Some((f, _))) = (args.flags.contains(MigrateVmaFlags::SELECT_SYSTEM), found)
        else {
            drop(g);
            args.skip(start, end);
            return Huge::Done;
        };
        (f, pmd.is_write())
    } else if !pmd.is_present() {
        let entry = Softleaf::from_pmd(pmd);
        let found = entry
            .to_frame(mode)
            .and_then(|f| frame_to_folio(mem.sys(), guard, f));
        // A PMD migration entry is not device-private, so it is skipped
        // here: the kernel's wait for it below this test is unreachable.
        let ok = match found {
            Some((AnyFolio::Dev(df), _)) => {
                entry.is_device_private()
                    && args.flags.contains(MigrateVmaFlags::SELECT_DEVICE_PRIVATE)
                    && args.pgmap_owner.is_some()
                    && df.pgmap().map(|p| p.owner()) == args.pgmap_owner
            }
            _ => false,
        };
        let (true, Some((f, _))) = (ok, found) else {
            drop(g);
            args.skip(start, end);
            return Huge::Done;
        };
        (f, entry.is_device_private_write())
    } else {
        return Huge::Again;
    };
    folio.get();
    let is_fault = fault == Some(folio);
    if !is_fault && !folio.trylock() {
        drop(g);
        folio.put();
        args.skip(start, end);
        return Huge::Done;
    }
    if mm.config().thp_migration
        && args.flags.contains(MigrateVmaFlags::SELECT_COMPOUND)
        && start.is_multiple_of(PMD_SIZE)
        && end.is_multiple_of(PMD_SIZE)
    {
        let mpfn = folio.frame(0).and_then(|f| MigratePfn::new(f).ok());
        if let Some(mpfn) = mpfn
            && set_pmd_migration_entry(&g, folio, mm.config()).is_ok()
        {
            let w = if write { MigratePfn::WRITE } else { 0 };
            args.push(or(mpfn, w | MigratePfn::MIGRATE | MigratePfn::COMPOUND));
            args.cpages += 1;
            args.skip(start + PAGE_SIZE, end);
            return Huge::Done;
        }
    }
    // fallback:
    drop(g);
    if !folio.is_large() {
        // Unreachable (an order-0 folio behind a leaf PMD); the kernel
        // returns here still holding the reference and the lock.
        if !is_fault {
            folio.unlock();
        }
        folio.put();
        return Huge::Fallthrough;
    }
    let ret = split_folio(mm, folio);
    if !is_fault {
        folio.unlock();
    }
    folio.put();
    if ret.is_err() {
        args.skip(start, end);
        return Huge::Done;
    }
    if mm.pmdp_get_lockless(start).is_some_and(Pmd::is_none) {
        args.hole(start, end);
        return Huge::Done;
    }
    Huge::Fallthrough
}

/// Replaces the huge or device-private PMD `g` points at with a migration
/// entry for `folio`, dropping the PMD rmap and the mapping's reference.
///
/// Kernel: `set_pmd_migration_entry()`, `mm/huge_memory.c` (7.0).
fn set_pmd_migration_entry(
    g: &PmdGuard<'_>,
    folio: AnyFolio<'_>,
    cfg: MmConfig,
) -> Result<(), Errno> {
    let (entry, frame) = pmd_to_migration_entry(g.get(), cfg)?.ok_or(Errno::EINVAL)?;
    if folio.page_index(frame) != Some(0) || folio.entire_mapcount() <= 0 {
        return Err(Errno::EINVAL);
    }
    g.set(Pmd::from_swp_entry(entry)?)?;
    folio.remove_rmap_pmd()?;
    folio.put();
    Ok(())
}

/// Splits a large folio met during collection, keeping the fault page's
/// lock and reference on the folio that holds the fault page afterwards.
///
/// Kernel: `migrate_vma_split_folio()`, `mm/migrate_device.c` (7.0).
fn migrate_vma_split_folio(
    mm: &Mm,
    folio: AnyFolio<'_>,
    fault_page: Option<DevicePrivateOffset>,
) -> Result<(), Errno> {
    let guard = mm.memory().space().read();
    let fault = fault_folio(&guard, fault_page);
    if fault != Some(folio) {
        folio.get();
        if !folio.trylock() {
            folio.put();
            return Err(Errno::EAGAIN);
        }
    }
    if let Err(e) = split_folio(mm, folio) {
        if fault != Some(folio) {
            folio.unlock();
            folio.put();
        }
        return Err(e);
    }
    match fault_folio(&guard, fault_page) {
        None => {
            folio.unlock();
            folio.put();
        }
        Some(new_fault) if new_fault != folio => {
            if fault != Some(new_fault) {
                new_fault.get();
                warn_on!(
                    !new_fault.trylock(),
                    "migrate_vma_split_folio(): new fault folio already locked"
                );
            }
            folio.unlock();
            folio.put();
        }
        Some(_) => {}
    }
    Ok(())
}

/// `migrate_vma_check_page()`: `false` if someone beyond the migration,
/// the fault path and the mappings holds a reference.
fn check_page(folio: AnyFolio<'_>, is_fault_page: bool) -> bool {
    let mut extra = 1 + i64::from(is_fault_page);
    if folio.is_device_private() {
        extra += 1;
    }
    folio.refcount() - extra <= folio.mapcount()
}

/// Unmaps every collected page that is still mapped (`try_to_migrate()`),
/// marks large folios `COMPOUND`, and gives back (restores, unlocks and
/// drops) every page that stays mapped or is pinned. Returns the number of
/// entries still migrating.
///
/// Kernel: `migrate_device_unmap()`, `mm/migrate_device.c` (7.0).
///
/// # Differences from the kernel
///
/// No LRU isolation (system folios keep the reference collect took).
fn migrate_device_unmap(
    mm: &Mm,
    src: &mut [MigratePfn],
    fault_page: Option<DevicePrivateOffset>,
) -> u64 {
    let mem = mm.memory();
    let guard = mem.space().read();
    let fault = fault_folio(&guard, fault_page);
    let fault_frame = fault_page.map(PageFrame::DevicePrivate);
    let mut unmapped = 0;
    let mut restore = 0;
    let mut i = 0;
    while i < src.len() {
        let Some((folio, _)) = mpfn_folio(mem, &guard, src[i]) else {
            if src[i].contains(MigratePfn::MIGRATE) {
                unmapped += 1;
            }
            i += 1;
            continue;
        };
        let nr = usize::try_from(folio.nr_pages()).unwrap_or(1).max(1);
        if nr > 1 {
            src[i] = or(src[i], MigratePfn::COMPOUND);
        }
        if folio.mapcount() > 0 {
            let r = try_to_migrate(mm, folio);
            warn_on!(
                r.is_err(),
                "migrate_device_unmap(): try_to_migrate() failed"
            );
        }
        let is_fault = fault_frame.is_some() && src[i].frame() == fault_frame;
        if folio.mapcount() > 0 || !check_page(folio, is_fault) {
            src[i] = src[i].without(MigratePfn::MIGRATE);
            restore += 1;
        } else {
            unmapped += 1;
        }
        i += nr;
    }
    for m in src.iter_mut() {
        if restore == 0 {
            break;
        }
        if m.contains(MigratePfn::MIGRATE) {
            continue;
        }
        let Some((folio, _)) = mpfn_folio(mem, &guard, *m) else {
            continue;
        };
        let r = remove_migration_ptes(mm, folio, folio);
        warn_on!(r.is_err(), "migrate_device_unmap(): restore failed");
        *m = MigratePfn::NONE;
        if fault != Some(folio) {
            folio.unlock();
        }
        folio.put();
        restore -= 1;
    }
    unmapped
}

/// The VMA side of `__migrate_device_pages()` (its `migrate` argument).
#[derive(Clone, Copy)]
struct VmaCtx<'a> {
    mm: &'a Mm,
    vma: &'a Vma,
    start: u64,
}

/// Moves `mapping` and `index` from each migrating source to its
/// destination, inserts destination pages for holes, and splits compound
/// sources that got small destinations; clears `MIGRATE` on every entry
/// that cannot migrate.
///
/// Kernel: `migrate_vma_pages(migrate)` → `__migrate_device_pages()`,
/// `mm/migrate_device.c` (with `migrate_vma_insert_page()`,
/// `migrate_vma_insert_huge_pmd_page()`,
/// `migrate_vma_split_unmapped_folio()`, `folio_migrate_mapping()`, 7.0).
///
/// A destination must be a locked folio with one reference (a device
/// folio from `zone_device_folio_init()`, or a locked system folio); a
/// `COMPOUND` destination must be PMD-sized.
///
/// # Differences from the kernel
///
/// See the module documentation (`extra_cnt`); `folio_migrate_flags()` is
/// not modelled (the model's folios carry no such flags).
///
/// # Examples
///
/// An entry without a destination does not migrate: `migrate_vma_pages`
/// clears its `MIGRATE` and [`migrate_vma_finalize`] puts the page back
/// (the whole round is in [`migrate_vma_setup`]'s example).
///
/// ```
/// # use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
/// # use devpriv_migrate::{
/// #     FaultFlags, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig, SystemMemory,
/// #     VmFlags, handle_mm_fault, migrate_vma_finalize, migrate_vma_pages, migrate_vma_setup,
/// # };
/// # use devpriv_pagemap::DevicePrivateSpace;
/// # use std::sync::Arc;
/// # let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
/// # let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
/// # let mm = Mm::new(&mem, MmConfig::default());
/// # let base = 0x7f00_0000_0000;
/// let vma = mm.mmap_write_lock().mmap_anon(base, PAGE_SIZE, VmFlags::RW)?;
/// handle_mm_fault(&mm, base, FaultFlags::WRITE)?;
/// mm.write_user(base, 42)?;
/// let sel = MigrateVmaFlags::SELECT_SYSTEM;
/// let mut args = MigrateVma::new(&mm, &vma, base, base + PAGE_SIZE, sel, None);
/// migrate_vma_setup(&mut args)?;
/// assert!(mm.read_user(base).is_err(), "a migration entry in the PTE");
/// migrate_vma_pages(&mut args); // no dst was filled in
/// assert!(!args.src[0].contains(MigratePfn::MIGRATE));
/// migrate_vma_finalize(&mut args);
/// assert_eq!(mm.read_user(base), Ok(42), "restored");
/// # Ok::<(), Errno>(())
/// ```
pub fn migrate_vma_pages(args: &mut MigrateVma<'_>) {
    let n = args.nr_collected();
    let mm = args.mm;
    let mem = mm.memory();
    let ctx = VmaCtx {
        mm: args.mm,
        vma: args.vma,
        start: args.start,
    };
    migrate_pages_inner(
        mem,
        &mut args.src[..n],
        &mut args.dst[..n],
        Some(ctx),
        args.fault_page,
    );
}

/// Kernel: `__migrate_device_pages()` (7.0).
fn migrate_pages_inner(
    mem: &Memory,
    src: &mut [MigratePfn],
    dst: &mut [MigratePfn],
    ctx: Option<VmaCtx<'_>>,
    fault_page: Option<DevicePrivateOffset>,
) {
    let guard = mem.space().read();
    let npages = src.len().min(dst.len());
    let thp = ctx.is_none_or(|c| c.mm.config().thp_migration);
    let fault_frame = fault_page.map(PageFrame::DevicePrivate);
    let mut i = 0;
    while i < npages {
        let mut nr = 1;
        let has_new = mpfn_folio(mem, &guard, dst[i]).is_some();
        let page = mpfn_folio(mem, &guard, src[i]);
        if !has_new {
            src[i] = src[i].without(MigratePfn::MIGRATE);
            i += 1;
            continue;
        }
        let Some((folio, _)) = page else {
            if !src[i].contains(MigratePfn::MIGRATE) {
                i += 1;
                continue;
            }
            let Some(c) = ctx else {
                warn_on!(true, "migrate_device_pages(): a hole without a VMA");
                src[i] = src[i].without(MigratePfn::MIGRATE);
                i += 1;
                continue;
            };
            let addr = c.start + (i as u64) * PAGE_SIZE;
            if src[i].contains(MigratePfn::COMPOUND) && !dst[i].contains(MigratePfn::COMPOUND) {
                nr = if thp { PMD_NR } else { 1 };
                src[i] = src[i].without(MigratePfn::COMPOUND);
            }
            let mut j = 0;
            while j < nr && i + j < npages {
                src[i + j] = or(src[i + j], MigratePfn::MIGRATE);
                migrate_vma_insert_page(
                    &guard,
                    c,
                    addr + (j as u64) * PAGE_SIZE,
                    dst[i + j],
                    &mut src[i + j..],
                );
                j += 1;
            }
            i += nr;
            continue;
        };
        if thp {
            let s = src[i];
            if s.contains(MigratePfn::MIGRATE | MigratePfn::COMPOUND)
                && !dst[i].contains(MigratePfn::COMPOUND)
            {
                let Some(c) = ctx else {
                    src[i] = s.without(MigratePfn::MIGRATE | MigratePfn::COMPOUND);
                    i += 1;
                    continue;
                };
                nr = usize::try_from(folio.nr_pages()).unwrap_or(1).max(1);
                let addr = c.start + (i as u64) * PAGE_SIZE;
                if migrate_vma_split_unmapped_folio(c.mm, &mut src[i..], addr, folio).is_err() {
                    src[i] = s.without(MigratePfn::MIGRATE | MigratePfn::COMPOUND);
                    i += nr;
                    continue;
                }
            } else if s.contains(MigratePfn::MIGRATE)
                && dst[i].contains(MigratePfn::COMPOUND)
                && !s.contains(MigratePfn::COMPOUND)
            {
                src[i] = s.without(MigratePfn::MIGRATE);
            }
        }
        if folio.anon_id().is_none() {
            // Only anonymous memory can move to device memory.
            src[i] = src[i].without(MigratePfn::MIGRATE);
            i += nr;
            continue;
        }
        let mut j = 0;
        while j < nr && i + j < npages {
            let k = i + j;
            j += 1;
            if !src[k].contains(MigratePfn::MIGRATE) {
                continue;
            }
            let old = mpfn_folio(mem, &guard, src[k]).map(|x| x.0);
            let new = mpfn_folio(mem, &guard, dst[k]).map(|x| x.0);
            let extra = i64::from(fault_frame.is_some() && src[k].frame() == fault_frame);
            let ok = match (old, new) {
                (Some(old), Some(new)) => folio_migrate_mapping(new, old, extra).is_ok(),
                _ => false,
            };
            if !ok {
                src[k] = src[k].without(MigratePfn::MIGRATE);
            }
        }
        i += nr;
    }
}

/// Moves the anon identity (`mapping`, `index`) of an unmapped `folio` to
/// `newfolio`, if only the migration (plus `extra`) holds references.
///
/// Kernel: `folio_migrate_mapping(NULL, newfolio, folio, extra_count)`,
/// `mm/migrate.c` (the anonymous, no-swap-cache branch, 7.0).
fn folio_migrate_mapping(
    newfolio: AnyFolio<'_>,
    folio: AnyFolio<'_>,
    extra: i64,
) -> Result<(), Errno> {
    let expected = folio.mapcount() + 1 + extra;
    if folio.refcount() != expected {
        return Err(Errno::EAGAIN);
    }
    if let Some(id) = folio.anon_id() {
        newfolio.set_anon(id, folio.index());
    }
    Ok(())
}

/// Maps the destination of a hole: a device-private PTE
/// (`SWP_DEVICE_WRITE` if the VMA is writable) or a present PTE; for a
/// `COMPOUND` destination, a PMD. `src[0]` is the hole's entry (and for a
/// PMD, `src[..512]` its window).
///
/// Kernel: `migrate_vma_insert_page()` and
/// `migrate_vma_insert_huge_pmd_page()`, `mm/migrate_device.c` (7.0).
fn migrate_vma_insert_page(
    guard: &SpaceReadGuard<'_>,
    c: VmaCtx<'_>,
    addr: u64,
    dst: MigratePfn,
    src: &mut [MigratePfn],
) {
    let Some((folio, _)) = mpfn_folio(c.mm.memory(), guard, dst) else {
        src[0] = src[0].without(MigratePfn::MIGRATE);
        return;
    };
    if c.mm.config().thp_migration && dst.contains(MigratePfn::COMPOUND) {
        if insert_huge_pmd(c, addr, folio).is_err() {
            let n = (PMD_NR).min(src.len());
            for m in &mut src[..n] {
                *m = m.without(MigratePfn::MIGRATE);
            }
        }
        return;
    }
    match insert_pte(c, addr, folio) {
        Ok(()) => src[0] = flags_only(MigratePfn::MIGRATE),
        Err(_) => src[0] = src[0].without(MigratePfn::MIGRATE),
    }
}

/// The leaf a newly inserted page gets: device-private (writable with the
/// VMA) or present.
fn new_pte(c: VmaCtx<'_>, frame: PageFrame) -> Result<Pte, Errno> {
    let write = c.vma.flags().contains(VmFlags::WRITE);
    match frame {
        PageFrame::DevicePrivate(off) => {
            Pte::from_swp_entry(make_device_private_entry(write, off, c.mm.paging())?)
        }
        PageFrame::Pfn(pfn) => Pte::pfn_pte(pfn, present_prot(write)),
    }
}

fn present_prot(write: bool) -> u64 {
    _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | if write { _PAGE_RW | _PAGE_DIRTY } else { 0 }
}

fn insert_pte(c: VmaCtx<'_>, addr: u64, folio: AnyFolio<'_>) -> Result<(), Errno> {
    let pmd = c.mm.pmdp_get_lockless(addr).ok_or(Errno::EFAULT)?;
    if !pmd.is_none() && !pmd.is_table() {
        return Err(Errno::EBUSY);
    }
    let entry = new_pte(c, folio.frame(0).ok_or(Errno::EINVAL)?)?;
    let g = c.mm.pte_alloc_map_lock(addr)?;
    c.mm.check_stable_address_space()?;
    let cur = g.get();
    // A hole, or the zero page (which holds no reference to drop).
    if !(cur.is_none() || cur.is_present() && c.mm.memory().sys().is_zero_pfn(cur.pfn())) {
        return Err(Errno::EEXIST);
    }
    folio.set_anon(c.vma.id(), c.vma.linear_page_index(addr));
    folio.add_rmap_ptes(0, 1)?;
    folio.get();
    g.set(entry);
    Ok(())
}

/// Maps a PMD-sized destination of a hole with one PMD, depositing a
/// page-table page for a later split. Only a none PMD is replaced: one
/// that points to a PTE table, even an empty one, aborts the insert (the
/// caller then clears `MIGRATE` on the window).
///
/// Kernel: `migrate_vma_insert_huge_pmd_page()`, `mm/migrate_device.c`;
/// its error paths as fixed by 63451de16e0a and the pgtable-leak fix, or
/// as in 7.0 ([`HugeInsertErrors`]).
///
/// # Differences from the kernel
///
/// No huge zero page (the kernel also replaces one), no userfaultfd, no
/// memcg charge; the model's PTE tables are preallocated, so the deposit
/// is only counted ([`Mm::nr_pgtables`]).
fn insert_huge_pmd(c: VmaCtx<'_>, addr: u64, folio: AnyFolio<'_>) -> Result<(), Errno> {
    let mm = c.mm;
    if !addr.is_multiple_of(PMD_SIZE)
        || !c.vma.thp_suitable(addr)
        || folio.order() != Order::HPAGE_PMD
    {
        return Err(Errno::EINVAL);
    }
    warn_on_once!(
        mm.pmdp_get_lockless(addr).is_some_and(|p| !p.is_none()),
        "migrate_vma_insert_huge_pmd_page(): PMD not none"
    );
    let write = c.vma.flags().contains(VmFlags::WRITE);
    let entry = match folio.frame(0).ok_or(Errno::EINVAL)? {
        PageFrame::DevicePrivate(off) => {
            Pmd::from_swp_entry(make_device_private_entry(write, off, mm.paging())?)?
        }
        PageFrame::Pfn(pfn) => Pmd::huge(pfn, present_prot(write))?,
    };
    let pgtable = mm.pte_alloc_one();
    let fixed = mm.config().huge_insert_errors == HugeInsertErrors::Fixed;
    let g = match mm.pmd_lock(addr) {
        Ok(g) => g,
        Err(e) => {
            mm.pte_free(pgtable);
            return Err(e);
        }
    };
    if let Err(e) = mm.check_stable_address_space() {
        if fixed {
            drop(g);
            mm.pte_free(pgtable);
        } else {
            // 7.0's `goto abort`: the PMD lock is never released and the
            // table never freed (hazard H21).
            core::mem::forget(g);
            drop(pgtable);
        }
        return Err(e);
    }
    if !g.get().is_none() {
        drop(g);
        if fixed {
            mm.pte_free(pgtable);
        } else {
            // 7.0's `unlock_abort`: unlocked, but the table leaks.
            drop(pgtable);
        }
        return Err(Errno::EBUSY);
    }
    if let Err(e) = g.set(entry) {
        drop(g);
        mm.pte_free(pgtable);
        return Err(e);
    }
    folio.set_anon(c.vma.id(), c.vma.linear_page_index(addr));
    folio.add_rmap_pmd()?;
    folio.get();
    g.deposit(pgtable);
    Ok(())
}

/// Splits a compound source whose destination is not compound: the PMD
/// migration entry becomes 512 PTE migration entries, the folio becomes
/// 512 locked order-0 folios, and `src[1..512]` get their own entries
/// with `src[0]`'s flags (less `COMPOUND`).
///
/// Kernel: `migrate_vma_split_unmapped_folio()`, `mm/migrate_device.c` (7.0).
fn migrate_vma_split_unmapped_folio(
    mm: &Mm,
    src: &mut [MigratePfn],
    addr: u64,
    folio: AnyFolio<'_>,
) -> Result<(), Errno> {
    split_huge_pmd(mm, addr & !(PMD_SIZE - 1))?;
    split_unmapped_for_migration(folio)?;
    src[0] = src[0].without(MigratePfn::COMPOUND);
    let flags = src[0].flags() & !(MigratePfn::VALID | MigratePfn::DEVICE_PRIVATE);
    let base = src[0].frame().ok_or(Errno::EINVAL)?;
    let n = (PMD_NR).min(src.len());
    for (k, m) in src.iter_mut().enumerate().take(n).skip(1) {
        let f = base
            .checked_add(PageCount::new(k as u64))
            .ok_or(Errno::EINVAL)?;
        *m = or(MigratePfn::new(f)?, flags);
    }
    Ok(())
}

/// Points each migration entry at its destination (or back at the source
/// when the entry did not migrate), then unlocks and drops the sources and
/// destinations.
///
/// Kernel: `migrate_vma_finalize(migrate)` → `__migrate_device_finalize()`,
/// `mm/migrate_device.c` (7.0).
///
/// # Examples
///
/// Finalizing straight after setup (the driver found no destination)
/// restores every page; the rounds that migrate are in
/// [`migrate_vma_setup`]'s example.
///
/// ```
/// # use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
/// # use devpriv_migrate::{
/// #     FaultFlags, Memory, MigrateVma, MigrateVmaFlags, Mm, MmConfig, SystemMemory, VmFlags,
/// #     handle_mm_fault, migrate_vma_finalize, migrate_vma_setup,
/// # };
/// # use devpriv_pagemap::DevicePrivateSpace;
/// # use std::sync::Arc;
/// # let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
/// # let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
/// # let mm = Mm::new(&mem, MmConfig::default());
/// # let base = 0x7f00_0000_0000;
/// let vma = mm.mmap_write_lock().mmap_anon(base, 4 * PAGE_SIZE, VmFlags::RW)?;
/// for i in 0..4 {
///     handle_mm_fault(&mm, base + i * PAGE_SIZE, FaultFlags::WRITE)?;
/// }
/// let sel = MigrateVmaFlags::SELECT_SYSTEM;
/// let mut args = MigrateVma::new(&mm, &vma, base, base + 4 * PAGE_SIZE, sel, None);
/// migrate_vma_setup(&mut args)?;
/// assert_eq!(args.cpages, 4);
/// migrate_vma_finalize(&mut args);
/// assert!((0..4).all(|i| mm.read_user(base + i * PAGE_SIZE) == Ok(0)));
/// # Ok::<(), Errno>(())
/// ```
pub fn migrate_vma_finalize(args: &mut MigrateVma<'_>) {
    let n = args.nr_collected();
    finalize_inner(args.mm, &args.src[..n], &args.dst[..n], args.fault_page);
}

/// Kernel: `__migrate_device_finalize()` (7.0).
fn finalize_inner(
    mm: &Mm,
    src: &[MigratePfn],
    dst: &[MigratePfn],
    fault_page: Option<DevicePrivateOffset>,
) {
    let mem = mm.memory();
    let guard = mem.space().read();
    let fault = fault_folio(&guard, fault_page);
    for (s, d) in src.iter().zip(dst) {
        let dstf = mpfn_folio(mem, &guard, *d).map(|x| x.0);
        let Some((srcf, _)) = mpfn_folio(mem, &guard, *s) else {
            if let Some(d) = dstf {
                warn_on!(fault == Some(d), "finalize: destination is the fault folio");
                d.unlock();
                d.put();
            }
            continue;
        };
        let dstf = match dstf {
            Some(d) if s.contains(MigratePfn::MIGRATE) => d,
            other => {
                if let Some(d) = other {
                    warn_on!(fault == Some(d), "finalize: destination is the fault folio");
                    d.unlock();
                    d.put();
                }
                srcf
            }
        };
        let r = remove_migration_ptes(mm, srcf, dstf);
        warn_on!(r.is_err(), "finalize: remove_migration_ptes() failed");
        if fault != Some(srcf) {
            srcf.unlock();
        }
        srcf.put();
        if dstf != srcf {
            warn_on!(
                fault == Some(dstf),
                "finalize: destination is the fault folio"
            );
            dstf.unlock();
            dstf.put();
        }
    }
}

/// Takes a reference on and locks the device page at `m`'s offset, if it
/// is a folio head in use; returns `m | MIGRATE`, or the empty entry.
///
/// Kernel: `migrate_device_pfn_lock()` (`folio_get_nontail_page()` +
/// `folio_trylock()`), `mm/migrate_device.c` (7.0).
fn migrate_device_pfn_lock(
    guard: &SpaceReadGuard<'_>,
    m: MigratePfn,
    mutants: Mutants,
) -> MigratePfn {
    let Some(PageFrame::DevicePrivate(off)) = m.frame() else {
        return MigratePfn::NONE;
    };
    let Some(page) = guard.device_private_offset_to_page(off) else {
        return MigratePfn::NONE;
    };
    // get_page_unless_zero(): a page a CPU fault has just migrated and
    // freed must not come back to life (the loom model `fault_vs_evict`).
    let got = if mutants.has(Mutant::EvictGetNotUnlessZero) {
        page.refcount() > 0 && page.ref_add(1) > 0
    } else {
        page.ref_add_unless_zero(1)
    };
    if page.is_tail() || !got {
        return MigratePfn::NONE;
    }
    let folio = AnyFolio::Dev(page.folio());
    // The folio lock keeps this migration apart from a CPU fault's (H23).
    if !mutants.has(Mutant::EvictNoTrylock) && !folio.trylock() {
        folio.put();
        return MigratePfn::NONE;
    }
    or(m, MigratePfn::MIGRATE)
}

/// Collects `npages` device-private pages from `start` for migration to
/// system memory, without a VMA: each page in use is referenced, locked and
/// unmapped from `mm`; a large folio gets one `COMPOUND` entry and
/// `nr - 1` empty ones.
///
/// Kernel: `migrate_device_range(src_pfns, start, npages)`,
/// `mm/migrate_device.c` (v6 03/13: `start` is an mpfn, and stepping
/// keeps its flag bits).
///
/// # Differences from the kernel
///
/// - The rmap walk covers `mm` only.
/// - The tail entries zeroed after a large folio stop at `npages` (the
///   kernel writes past the range when it ends inside a folio).
/// - A free page that no pagemap holds (the kernel would fault) gives an
///   empty entry.
///
/// # Errors
///
/// [`Errno::EINVAL`], nothing changed: `start` is not a valid
/// device-private mpfn, `src` is shorter than `npages`, or the range runs
/// past the largest mpfn index.
pub fn migrate_device_range(
    mm: &Mm,
    src: &mut [MigratePfn],
    start: MigratePfn,
    npages: u64,
) -> Result<(), Errno> {
    let n = usize::try_from(npages).map_err(|_| Errno::EINVAL)?;
    if !start.contains(MigratePfn::VALID | MigratePfn::DEVICE_PRIVATE) || src.len() < n {
        return Err(Errno::EINVAL);
    }
    if n > 0 {
        start.checked_add(PageCount::new(npages - 1))?;
    }
    migrate_device_lock_and_unmap(mm, &mut src[..n], |i, _| {
        start.checked_add(PageCount::new(i as u64))
    })
}

/// As [`migrate_device_range`], for a pre-filled array of device-private
/// mpfns that need not be contiguous.
///
/// Kernel: `migrate_device_pfns(src_pfns, npages)`, `mm/migrate_device.c` (7.0).
///
/// # Errors
///
/// [`Errno::EINVAL`], nothing changed, if any entry is neither empty nor a
/// valid device-private mpfn.
pub fn migrate_device_pfns(mm: &Mm, src: &mut [MigratePfn]) -> Result<(), Errno> {
    if src.iter().any(|m| {
        *m != MigratePfn::NONE && !m.contains(MigratePfn::VALID | MigratePfn::DEVICE_PRIVATE)
    }) {
        return Err(Errno::EINVAL);
    }
    migrate_device_lock_and_unmap(mm, src, |_, m| Ok(m))
}

/// The body `migrate_device_range()` and `migrate_device_pfns()` share:
/// entry `i` becomes the locked page of `mpfn(i, src[i])` (a large folio:
/// one `COMPOUND` entry, then empty ones), then everything is unmapped.
///
/// Kernel: the `migrate_device_pfn_lock()` loops of both, then
/// `migrate_device_unmap()`, `mm/migrate_device.c` (7.0).
fn migrate_device_lock_and_unmap(
    mm: &Mm,
    src: &mut [MigratePfn],
    mpfn: impl Fn(usize, MigratePfn) -> Result<MigratePfn, Errno>,
) -> Result<(), Errno> {
    {
        let mem = mm.memory();
        let guard = mem.space().read();
        let mut i = 0;
        while i < src.len() {
            let m = mpfn(i, src[i])?;
            src[i] = migrate_device_pfn_lock(&guard, m, mm.mutants());
            let nr = m
                .frame()
                .and_then(|f| frame_to_folio(mem.sys(), &guard, f))
                .map_or(1, |(f, _)| {
                    usize::try_from(f.nr_pages()).unwrap_or(1).max(1)
                });
            if nr > 1 {
                src[i] = or(src[i], MigratePfn::COMPOUND);
                for e in src.iter_mut().skip(i + 1).take(nr - 1) {
                    *e = MigratePfn::NONE;
                }
            }
            i += nr;
        }
    }
    migrate_device_unmap(mm, src, None);
    Ok(())
}

/// [`migrate_vma_pages`] for entries from [`migrate_device_range`]: no
/// holes, and no split (a `COMPOUND` source with a small destination does
/// not migrate).
///
/// Kernel: `migrate_device_pages(src_pfns, dst_pfns, npages)`,
/// `mm/migrate_device.c` (7.0).
///
/// # Errors
///
/// [`Errno::EINVAL`] if `src` and `dst` differ in length; nothing changes.
pub fn migrate_device_pages(
    mem: &Memory,
    src: &mut [MigratePfn],
    dst: &mut [MigratePfn],
) -> Result<(), Errno> {
    if src.len() != dst.len() {
        return Err(Errno::EINVAL);
    }
    migrate_pages_inner(mem, src, dst, None, None);
    Ok(())
}

/// [`migrate_vma_finalize`] for entries from [`migrate_device_range`].
///
/// Kernel: `migrate_device_finalize(src_pfns, dst_pfns, npages)`,
/// `mm/migrate_device.c` (7.0).
///
/// # Errors
///
/// [`Errno::EINVAL`] if `src` and `dst` differ in length; nothing changes.
pub fn migrate_device_finalize(
    mm: &Mm,
    src: &[MigratePfn],
    dst: &[MigratePfn],
) -> Result<(), Errno> {
    if src.len() != dst.len() {
        return Err(Errno::EINVAL);
    }
    finalize_inner(mm, src, dst, None);
    Ok(())
}
