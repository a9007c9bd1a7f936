//! Target `page_lifecycle_ops`: pagemaps and device folios driven through
//! their whole life against a state model.
//!
//! Kernel: `memremap_device_private_pagemap()`,
//! `memunmap_device_private_pagemap()`, `device_private_offset_to_page()`,
//! `device_private_page_to_offset()`, `zone_device_folio_init()`,
//! `folio_get()`, `folio_put()`, `free_zone_device_folio()`,
//! `folio_split_unmapped()` (`mm/memremap.c`, `mm/huge_memory.c`, as
//! modelled by `devpriv-pagemap`, 7.0 and v6).
//!
//! The model tracks, per pagemap: its address range, its reinit policy,
//! whether its ref was killed, and every live folio (head, order,
//! refcount, lock, anon). After every operation the run checks against it:
//! the result and errno, the `WARN`s raised (none on a correct call,
//! exactly the expected one on a bad call), the pagemap reference count
//! (1 + the pages of every live folio, 0 once killed), each live folio's
//! refcount, order, lock and anon bit, that every page of a folio names
//! its head and every other page has refcount 0, the driver's `folio_free`
//! calls (once per freed folio, with the order it should see), the
//! lookups both ways, and `validate()` of the space and the pagemap.
//!
//! Only calls that keep the kernel's preconditions are made (a driver
//! hands out only pages it owns and that are free; the last reference is
//! not dropped while the folio is locked), plus a few bad calls whose
//! outcome the model documents (a put on a free page, an allocation past
//! the pagemap, a split of a non-anon folio, a second unmap). Policies
//! [`ReinitPolicy::AtAlloc`] and [`ReinitPolicy::AtFree`] only: under
//! [`ReinitPolicy::None`] stale metadata is the expected outcome (hazards
//! H1–H4, covered by `crates/devpriv-pagemap/tests/folio.rs`).

use crate::check_eq;
use arbitrary::Arbitrary;
use devpriv_core::sync::Mutex;
use devpriv_core::{DevicePrivateAddr, DevicePrivateOffset, Errno, Order, PageCount, warn};
use devpriv_pagemap::mm_types::PAGE_MAPPING_ANON;
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, InitError, Owner, Packing, PageRef,
    PagemapParams, ReinitPolicy, SpaceConfig, VmFault, folio_get, folio_put, folio_split_unmapped,
    zone_device_folio_init,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// log2 of the space's size in bytes: 4096 pages.
const SPACE_SHIFT: u32 = 24;
/// Pages in the space.
const SPACE_PAGES: u64 = 1 << (SPACE_SHIFT - 12);

/// One operation. Pagemaps and folios are chosen by index modulo how many
/// there are.
///
/// Kernel: the functions named in the module docs (main).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum LifeOp {
    /// `memremap_device_private_pagemap()` of `1 + nr % 1024` pages, with
    /// policy `AtFree` if `at_free`, else `AtAlloc`.
    Memremap {
        /// Pages, taken as `1 + nr % 1024`.
        nr: u16,
        /// Reinit policy `AtFree`.
        at_free: bool,
    },
    /// Unmap: succeeds when no folio is live; otherwise the bounded
    /// variant gives up with `EBUSY` and leaves the ref killed. A second
    /// unmap is `EINVAL`.
    Unmap {
        /// Which pagemap.
        pm: u8,
    },
    /// `zone_device_folio_init()` at page `at % nr_pages`, order
    /// `order % 10`, if those pages are free.
    Alloc {
        /// Which pagemap.
        pm: u8,
        /// First page.
        at: u16,
        /// Order, taken as `order % 10`.
        order: u8,
    },
    /// `folio_get()`.
    Get {
        /// Which pagemap.
        pm: u8,
        /// Which live folio.
        folio: u8,
    },
    /// `folio_put()` (not the last reference of a locked folio).
    Put {
        /// Which pagemap.
        pm: u8,
        /// Which live folio.
        folio: u8,
    },
    /// `folio_trylock()`.
    Lock {
        /// Which pagemap.
        pm: u8,
        /// Which live folio.
        folio: u8,
    },
    /// `folio_unlock()` of a locked folio.
    Unlock {
        /// Which pagemap.
        pm: u8,
        /// Which live folio.
        folio: u8,
    },
    /// Makes the folio anon (`folio->mapping = anon_vma | PAGE_MAPPING_ANON`).
    MakeAnon {
        /// Which pagemap.
        pm: u8,
        /// Which live folio.
        folio: u8,
    },
    /// `folio_split_unmapped(folio, new_order % order)` of a locked large
    /// folio.
    Split {
        /// Which pagemap.
        pm: u8,
        /// Which live folio.
        folio: u8,
        /// New order, taken modulo the folio's.
        new_order: u8,
    },
    /// `folio_put()` on a free page (as its own folio): a `WARN`, nothing
    /// changes.
    PutFree {
        /// Which pagemap.
        pm: u8,
        /// Page, taken modulo the pagemap's size.
        at: u16,
    },
    /// `device_private_offset_to_page()` (index and tree paths) and back.
    Lookup {
        /// Offset, taken modulo the space's pages + 64 (some past the end).
        off: u16,
    },
}

/// What the driver saw in `folio_free`: (pagemap id, head index, order).
type FreeLog = Vec<(u64, usize, u32)>;

/// A driver that records `folio_free` calls.
#[derive(Default)]
struct Driver {
    freed: Mutex<FreeLog>,
}

impl DevPagemapOps for Driver {
    fn folio_free(&self, folio: Folio<'_>) {
        let p = folio.page();
        self.freed
            .lock()
            .push((p.owner().id(), p.index(), folio.order().get()));
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

/// The model of one live folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FolioModel {
    order: u32,
    refs: i32,
    locked: bool,
    anon: bool,
}

impl FolioModel {
    fn pages(self) -> usize {
        1 << self.order
    }
}

/// The model of one pagemap.
struct PmModel {
    pm: Arc<DevPagemap>,
    policy: ReinitPolicy,
    killed: bool,
    unmapped: bool,
    folios: BTreeMap<usize, FolioModel>,
}

impl PmModel {
    fn nr(&self) -> usize {
        self.pm.pages().len()
    }

    /// `true` if no live folio covers a page of `start..end`.
    fn is_free(&self, start: usize, end: usize) -> bool {
        self.folios
            .range(..end)
            .next_back()
            .is_none_or(|(&h, f)| h + f.pages() <= start)
    }

    fn nth_folio(&self, i: u8) -> Option<usize> {
        let n = self.folios.len();
        if n == 0 {
            return None;
        }
        self.folios.keys().nth(usize::from(i) % n).copied()
    }

    fn live_pages(&self) -> i64 {
        self.folios.values().map(|f| 1i64 << f.order).sum()
    }

    /// Checks the pagemap against the model.
    fn check(&self, at: &dyn Fn() -> String) -> Result<(), String> {
        let pm = &*self.pm;
        let want = i64::from(!self.killed) + self.live_pages();
        check_eq(&pm.percpu_ref().count(), &want, || {
            format!("{}: pgmap refs", at())
        })?;
        if self.unmapped {
            return Ok(());
        }
        pm.validate().map_err(|e| format!("{}: {e}", at()))?;
        let mut owned = vec![false; self.nr()];
        for (&h, f) in &self.folios {
            let head = PageRef::new(pm, h).ok_or_else(|| format!("{}: head {h}", at()))?;
            let folio = Folio::from_head(head);
            let got = FolioModel {
                order: folio.order().get(),
                refs: head.refcount(),
                locked: folio.test_locked(),
                anon: folio.test_anon(),
            };
            check_eq(&got, f, || format!("{}: folio at {h}", at()))?;
            let span = owned
                .get_mut(h..h + f.pages())
                .ok_or_else(|| format!("{}: folio at {h} past the pagemap", at()))?;
            span.fill(true);
            for j in h..h + f.pages() {
                let p = PageRef::new(pm, j).ok_or_else(|| format!("{}: page {j}", at()))?;
                check_eq(&p.folio().page().index(), &h, || {
                    format!("{}: page_folio of page {j}", at())
                })?;
                if j != h {
                    check_eq(&p.refcount(), &0, || format!("{}: tail {j} refcount", at()))?;
                }
            }
        }
        for (j, page) in pm.pages().iter().enumerate() {
            if !owned[j] {
                check_eq(&page.refcount(), &0, || format!("{}: free page {j}", at()))?;
            }
        }
        Ok(())
    }
}

/// Runs the `page_lifecycle_ops` target on `data`.
///
/// Kernel: none (model only; drives the functions named in the module
/// docs).
///
/// # Errors
///
/// A message naming the step and operation where the model and the state
/// model disagreed.
pub fn run_page_lifecycle_ops(data: &[u8]) -> Result<(), String> {
    let ops = crate::decode_ops::<LifeOp>(data);
    run_ops(&ops).map_err(|e| format!("{e}\nops: {ops:?}"))
}

/// The pagemap an operation names (by index), if any exist.
fn pick(len: usize, i: u8) -> Option<usize> {
    (len != 0).then(|| usize::from(i) % len)
}

/// Checks that `hits` holds exactly `n` hits, each matching `needle`.
fn check_warns(
    hits: &warn::Warnings,
    n: usize,
    needle: &str,
    at: &dyn Fn() -> String,
) -> Result<(), String> {
    if hits.count() != n || hits.count_matching(needle) != n {
        return Err(format!(
            "{}: want {n} WARN(s) matching {needle:?}, got {:?}",
            at(),
            hits.sites()
        ));
    }
    Ok(())
}

/// As [`run_page_lifecycle_ops`], on decoded operations.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// As for [`run_page_lifecycle_ops`].
#[expect(
    clippy::too_many_lines,
    reason = "one arm per operation, each a call and its checks"
)]
pub fn run_ops(ops: &[LifeOp]) -> Result<(), String> {
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        packing: Packing::KernelExact,
        space_shift: Some(SPACE_SHIFT),
        ..SpaceConfig::default()
    });
    let driver = Arc::new(Driver::default());
    let mut pms: Vec<PmModel> = Vec::new();
    let mut freed: FreeLog = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let at = || format!("step {step}: {op:?}");
        let mut touched = None;
        let (r, hits) = warn::capture(|| -> Result<(usize, &'static str), String> {
            match *op {
                LifeOp::Memremap { nr, at_free } => {
                    let nr = 1 + u64::from(nr % 1024);
                    let size = nr << 12;
                    // The oracle: lowest fit in 0..=space over mapped ranges.
                    let mut taken: Vec<(u64, u64)> = pms
                        .iter()
                        .filter(|p| !p.unmapped)
                        .map(|p| (*p.pm.range().start(), *p.pm.range().end()))
                        .map(|(s, e)| (s.get(), e.get()))
                        .collect();
                    taken.sort_unstable();
                    let limit = 1u64 << SPACE_SHIFT;
                    let want = std::iter::once(0)
                        .chain(taken.iter().map(|&(_, e)| e + 1))
                        .find(|&c| {
                            c + (size - 1) <= limit
                                && taken.iter().all(|&(s, e)| e < c || s > c + (size - 1))
                        })
                        .ok_or(Errno::EBUSY);
                    let params =
                        PagemapParams::private(PageCount::new(nr), Owner(7), driver.clone());
                    let got = space.memremap_device_private_pagemap(params, 0);
                    check_eq(
                        &got.as_ref()
                            .map(|p| p.range().start().get())
                            .map_err(|e| *e),
                        &want,
                        at,
                    )?;
                    if let Ok(pm) = got {
                        let policy = if at_free {
                            ReinitPolicy::AtFree
                        } else {
                            ReinitPolicy::AtAlloc
                        };
                        pm.set_reinit_policy(policy);
                        pms.push(PmModel {
                            pm,
                            policy,
                            killed: false,
                            unmapped: false,
                            folios: BTreeMap::new(),
                        });
                        touched = Some(pms.len() - 1);
                    }
                    Ok((0, ""))
                }
                LifeOp::Unmap { pm } => {
                    let Some(i) = pick(pms.len(), pm) else {
                        return Ok((0, ""));
                    };
                    touched = Some(i);
                    let m = &mut pms[i];
                    let got = space.try_memunmap_device_private_pagemap(&m.pm, Duration::ZERO);
                    if m.unmapped {
                        check_eq(&got, &Err(Errno::EINVAL), at)?;
                        return Ok((1, "not mapped in this space"));
                    }
                    m.killed = true;
                    if m.folios.is_empty() {
                        check_eq(&got, &Ok(()), at)?;
                        m.unmapped = true;
                        check_eq(&m.pm.is_unmapped(), &true, at)?;
                    } else {
                        check_eq(&got, &Err(Errno::EBUSY), at)?;
                    }
                    Ok((0, ""))
                }
                LifeOp::Alloc {
                    pm,
                    at: page,
                    order,
                } => {
                    let Some(i) = pick(pms.len(), pm) else {
                        return Ok((0, ""));
                    };
                    let m = &mut pms[i];
                    if m.killed || m.unmapped {
                        return Ok((0, ""));
                    }
                    touched = Some(i);
                    let order = u32::from(order % 10);
                    let start = usize::from(page) % m.nr();
                    let end = start + (1 << order);
                    let fits = end <= m.nr();
                    if !m.is_free(start, end.min(m.nr())) {
                        return Ok((0, "")); // the driver does not own them
                    }
                    let head =
                        PageRef::new(&m.pm, start).ok_or_else(|| format!("{}: page", at()))?;
                    let o = Order::new(order).ok_or_else(|| format!("{}: order", at()))?;
                    // `(struct folio *)page`: a cast, not `page_folio()`
                    // (the page may be a stale tail of an old folio).
                    let got = zone_device_folio_init(Folio::from_head(head), &m.pm, o);
                    if !fits {
                        check_eq(
                            &got.map(|f| f.page().index()),
                            &Err(InitError::Errno(Errno::EINVAL)),
                            at,
                        )?;
                        return Ok((1, "pages beyond the pagemap"));
                    }
                    check_eq(&got.map(|f| f.page().index()), &Ok(start), at)?;
                    m.folios.insert(
                        start,
                        FolioModel {
                            order,
                            refs: 1,
                            locked: true,
                            anon: false,
                        },
                    );
                    Ok((0, ""))
                }
                LifeOp::Get { pm, folio }
                | LifeOp::Put { pm, folio }
                | LifeOp::Lock { pm, folio }
                | LifeOp::Unlock { pm, folio }
                | LifeOp::MakeAnon { pm, folio }
                | LifeOp::Split { pm, folio, .. } => {
                    let Some(i) = pick(pms.len(), pm) else {
                        return Ok((0, ""));
                    };
                    let m = &mut pms[i];
                    let Some(h) = m.nth_folio(folio) else {
                        return Ok((0, ""));
                    };
                    touched = Some(i);
                    let pmr = Arc::clone(&m.pm);
                    let f = Folio::from_head(
                        PageRef::new(&pmr, h).ok_or_else(|| format!("{}: head", at()))?,
                    );
                    let fm = m
                        .folios
                        .get_mut(&h)
                        .ok_or_else(|| format!("{}: model", at()))?;
                    match *op {
                        LifeOp::Get { .. } => {
                            folio_get(f);
                            fm.refs += 1;
                        }
                        LifeOp::Put { .. } => {
                            if fm.refs == 1 && fm.locked {
                                return Ok((0, ""));
                            }
                            folio_put(f);
                            fm.refs -= 1;
                            if fm.refs == 0 {
                                let seen = if m.policy == ReinitPolicy::AtFree {
                                    0
                                } else {
                                    fm.order
                                };
                                freed.push((pmr.id(), h, seen));
                                m.folios.remove(&h);
                            }
                        }
                        LifeOp::Lock { .. } => {
                            check_eq(&f.trylock(), &!fm.locked, at)?;
                            fm.locked = true;
                        }
                        LifeOp::Unlock { .. } => {
                            if fm.locked {
                                f.unlock();
                                fm.locked = false;
                            }
                        }
                        LifeOp::MakeAnon { .. } => {
                            f.set_mapping(0x1000 | PAGE_MAPPING_ANON);
                            fm.anon = true;
                        }
                        LifeOp::Split { new_order, .. } => {
                            if !fm.locked || fm.order == 0 {
                                return Ok((0, ""));
                            }
                            let new = u32::from(new_order) % fm.order;
                            let o = Order::new(new).ok_or_else(|| format!("{}: order", at()))?;
                            let got = folio_split_unmapped(f, o);
                            if !fm.anon {
                                check_eq(&got, &Err(Errno::EINVAL), at)?;
                                return Ok((1, "not locked or not anon"));
                            }
                            if fm.refs != 1 {
                                check_eq(&got, &Err(Errno::EAGAIN), at)?;
                                return Ok((0, ""));
                            }
                            check_eq(&got, &Ok(()), at)?;
                            if new == 1 {
                                // 7.0: an anon folio is never split to order
                                // 1; the call succeeds and splits nothing.
                                return Ok((0, ""));
                            }
                            let old = *fm;
                            m.folios.remove(&h);
                            for k in (h..h + old.pages()).step_by(1 << new) {
                                m.folios.insert(k, FolioModel { order: new, ..old });
                            }
                        }
                        _ => unreachable!("matched above"),
                    }
                    Ok((0, ""))
                }
                LifeOp::PutFree { pm, at: page } => {
                    let Some(i) = pick(pms.len(), pm) else {
                        return Ok((0, ""));
                    };
                    let m = &pms[i];
                    if m.unmapped {
                        return Ok((0, ""));
                    }
                    let j = usize::from(page) % m.nr();
                    if !m.is_free(j, j + 1) {
                        return Ok((0, ""));
                    }
                    touched = Some(i);
                    let p = PageRef::new(&m.pm, j).ok_or_else(|| format!("{}: page", at()))?;
                    folio_put(Folio::from_head(p));
                    Ok((1, "folio refcount was 0"))
                }
                LifeOp::Lookup { off } => {
                    let off = u64::from(off) % (SPACE_PAGES + 64);
                    let want = pms.iter().filter(|p| !p.unmapped).find_map(|p| {
                        let first = p.pm.first_offset().get();
                        (first..first + p.nr() as u64).contains(&off).then(|| {
                            (
                                p.pm.id(),
                                usize::try_from(off - first).unwrap_or(usize::MAX),
                            )
                        })
                    });
                    let g = space.read();
                    let o = DevicePrivateOffset::new(off);
                    let got = g.device_private_offset_to_page(o);
                    let tree = g.device_private_offset_to_page_tree(o);
                    let key = |p: Option<PageRef<'_>>| p.map(|p| (p.owner().id(), p.index()));
                    check_eq(&key(got), &want, at)?;
                    check_eq(&key(tree), &want, || format!("{}: tree path", at()))?;
                    let addr = o.to_addr().map(DevicePrivateAddr::get);
                    let by_addr = addr
                        .and_then(|a| g.pagemap_at(DevicePrivateAddr::new(a)))
                        .map(|p| p.id());
                    check_eq(&by_addr, &want.map(|w| w.0), || {
                        format!("{}: pagemap_at", at())
                    })?;
                    match got {
                        Some(p) => {
                            let back = g.device_private_page_to_offset(p);
                            // A free page may keep a stale tail link (with
                            // reinit at alloc, until its next folio init):
                            // the kernel's `page_folio()` follows it, to a
                            // head that may now be another folio's tail,
                            // and reads garbage as `folio->pgmap`; the
                            // model warns and returns `None` (H10). Only a
                            // page of a live folio must map back.
                            let free = pms.iter().any(|m| {
                                !m.unmapped
                                    && m.pm.id() == p.owner().id()
                                    && m.is_free(p.index(), p.index() + 1)
                            });
                            if free && back.is_none() {
                                return Ok((1, "folio->pgmap does not name the page's pagemap"));
                            }
                            check_eq(&back, &Some(o), || format!("{}: back", at()))?;
                            Ok((0, ""))
                        }
                        None => Ok((2, "device_private_offset_to_page")),
                    }
                }
            }
        });
        let (n, needle) = r?;
        check_warns(&hits, n, needle, &at)?;
        check_eq(&*driver.freed.lock(), &freed, || {
            format!("{}: folio_free calls", at())
        })?;
        if let Some(i) = touched {
            pms[i].check(&at)?;
        }
        space
            .validate()
            .map_err(|e| format!("{}: validate: {e}", at()))?;
    }
    // Tear everything down: every reference goes, every pagemap unmaps.
    for m in &mut pms {
        let pmr = Arc::clone(&m.pm);
        for (&h, f) in &m.folios {
            let folio = Folio::from_head(PageRef::new(&pmr, h).ok_or("end: head")?);
            if f.locked {
                folio.unlock();
            }
            for _ in 0..f.refs {
                folio_put(folio);
            }
            let seen = if m.policy == ReinitPolicy::AtFree {
                0
            } else {
                f.order
            };
            freed.push((pmr.id(), h, seen));
        }
        m.folios.clear();
        if !m.unmapped {
            let got = space.try_memunmap_device_private_pagemap(&pmr, Duration::ZERO);
            check_eq(&got, &Ok(()), || format!("end: unmap pagemap {}", pmr.id()))?;
            m.killed = true;
            m.unmapped = true;
        }
        m.check(&|| "end".to_owned())?;
    }
    check_eq(&*driver.freed.lock(), &freed, || {
        "end: folio_free calls".to_owned()
    })?;
    check_eq(&space.is_empty(), &true, || "end: space empty".to_owned())?;
    space.validate().map_err(|e| format!("end: validate: {e}"))
}
