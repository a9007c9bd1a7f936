//! Page contents behind the model's data words.
//!
//! The model keeps one `u64` per page (system and device). The shim makes
//! that word a *handle* to 4 KiB of real bytes: equal contents get equal
//! handles (content-addressed), and handle 0 is the all-zero page, which
//! is what the model gives a new page. The model then moves, copies and
//! compares handles exactly where the kernel moves, copies and compares
//! pages; the shim turns them back into bytes where the process can see
//! them.
//!
//! Kernel: none (the shim's own bookkeeping).

use std::collections::HashMap;

/// Bytes in a page.
pub(crate) const PAGE: usize = 4096;

/// One page of bytes.
pub(crate) type PageBytes = [u8; PAGE];

/// Interned page contents.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Handle `h` (from 1) is `pages[h - 1]`.
    pages: Vec<Box<PageBytes>>,
    /// Content hash → the handles with that hash.
    index: HashMap<u64, Vec<u64>>,
}

/// A fast, non-cryptographic hash of a page (collisions are resolved by
/// comparing bytes).
fn hash(bytes: &PageBytes) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h
}

/// A page of zeros.
pub(crate) const ZERO: PageBytes = [0; PAGE];

impl Store {
    /// The handle of `bytes`: 0 for zeros, an existing handle for a
    /// content already stored, else a new one.
    pub(crate) fn intern(&mut self, bytes: &PageBytes) -> u64 {
        if bytes.iter().all(|b| *b == 0) {
            return 0;
        }
        let h = hash(bytes);
        if let Some(found) = self
            .index
            .get(&h)
            .and_then(|hs| hs.iter().find(|&&x| self.bytes(x) == bytes))
        {
            return *found;
        }
        self.pages.push(Box::new(*bytes));
        let handle = self.pages.len() as u64;
        self.index.entry(h).or_default().push(handle);
        handle
    }

    /// The bytes of `handle` (zeros for 0, or for a handle this store never
    /// gave out).
    pub(crate) fn bytes(&self, handle: u64) -> &PageBytes {
        usize::try_from(handle)
            .ok()
            .and_then(|h| h.checked_sub(1))
            .and_then(|i| self.pages.get(i))
            .map_or(&ZERO, |b| &**b)
    }

    /// Distinct non-zero contents stored.
    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_contents_share_a_handle_and_zero_is_zero() {
        let mut s = Store::default();
        assert_eq!(s.intern(&ZERO), 0);
        let mut a = ZERO;
        a[17] = 3;
        let mut b = ZERO;
        b[4095] = 9;
        let ha = s.intern(&a);
        let hb = s.intern(&b);
        assert_ne!(ha, 0);
        assert_ne!(ha, hb);
        assert_eq!(s.intern(&a.clone()), ha);
        assert_eq!(s.bytes(ha), &a);
        assert_eq!(s.bytes(hb), &b);
        assert_eq!(s.bytes(0), &ZERO);
        assert_eq!(s.bytes(999), &ZERO);
        assert_eq!(s.len(), 2);
    }
}
