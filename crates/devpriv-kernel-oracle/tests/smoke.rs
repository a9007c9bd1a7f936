//! tmp
use devpriv_kernel_oracle::*;
#[test]
fn smoke() {
    if !oracle_or_skip() { return; }
    eprintln!("{:?} {}", available(), flavour());
    let mut t = MapleTree::new().unwrap();
    for want in [0, 100, 200] {
        assert_eq!(t.alloc_range(100, 0..=999, 7), Ok(want));
    }
    assert_eq!(t.load(150), Some(7));
    assert_eq!(t.walk(150), (100..=199, Some(7)));
    assert_eq!(t.walk(500), (300..=u64::MAX, None));
    assert_eq!(t.alloc_rrange(10, 0..=999, 8), Ok(990));
    assert_eq!(t.insert_range(5..=5, 9), Err(devpriv_core::Errno::EEXIST));
    assert_eq!(t.erase(150), Some(7));
    assert!(t.validate());
    eprintln!("{:?}", t.entries());
    let mut t = MapleTree::new().unwrap();
    t.insert_range(0..=0, 1).unwrap();
    eprintln!("{:?} {:?} {:?}", t.entries(), t.walk(0), t.walk(5));
    eprintln!("{:?}", t.alloc_range(1, 0..=10, 3));
}
