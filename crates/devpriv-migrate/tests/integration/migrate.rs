//! `migrate_vma_*` paths checked against the kernel's own rules.

use crate::walk::{BASE, mm_with};
use devpriv_core::{Order, warn};
use devpriv_migrate::{
    MigratePfn, MigrateVma, MigrateVmaFlags, PMD_SIZE, migrate_vma_finalize, migrate_vma_pages,
    migrate_vma_setup,
};

/// `migrate_vma_insert_huge_pmd_page()` replaces only a none PMD (or the
/// huge zero PMD): a PMD that points to a PTE table — even an empty one —
/// aborts the whole 512-page insert, and the table stays.
#[test]
fn huge_insert_over_a_pte_table_aborts() {
    let (mm, mem) = mm_with(2 * PMD_SIZE);
    let nr_free = mem.sys().nr_free();
    let vma = mm.vmas()[0].clone();
    let sel = MigrateVmaFlags::SELECT_SYSTEM | MigrateVmaFlags::SELECT_COMPOUND;
    let mut args = MigrateVma::new(&mm, &vma, BASE, BASE + PMD_SIZE, sel, None);
    migrate_vma_setup(&mut args).unwrap();
    assert_eq!(args.cpages, 1);
    assert!(args.src[0].contains(MigratePfn::MIGRATE | MigratePfn::COMPOUND));
    // Someone installs an (empty) PTE table before the insert.
    drop(mm.pte_alloc_map_lock(BASE).unwrap());
    assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table());
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    assert!(f.trylock());
    args.dst[0] = MigratePfn::new(f.pfn().into())
        .unwrap()
        .with(MigratePfn::COMPOUND)
        .unwrap();
    let ((), hits) = warn::capture(|| migrate_vma_pages(&mut args));
    assert_eq!(
        hits.count_matching("migrate_vma_insert_huge_pmd_page(): PMD not none"),
        1
    );
    assert!(
        args.src[..512]
            .iter()
            .all(|m| !m.contains(MigratePfn::MIGRATE))
    );
    assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table(), "table kept");
    assert_eq!(f.mapcount(), 0, "the destination is mapped nowhere");
    migrate_vma_finalize(&mut args);
    assert_eq!(mem.sys().nr_free(), nr_free, "the destination was freed");
    assert_eq!((mm.nr_pgtables(), mm.nr_deposited_pgtables()), (0, 0));
}
