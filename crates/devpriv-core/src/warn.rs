//! `WARN_ON` paths that count their hits instead of printing a backtrace.
//!
//! Kernel: `WARN_ON()`, `WARN_ON_ONCE()`, `VM_WARN_ON()`,
//! `include/asm-generic/bug.h` (main).
//!
//! A kernel `WARN_ON` path does not stop the kernel: it prints, taints, and
//! the code goes on (usually returning an error or `NULL`). The model does
//! the same: [`warn_on!`](crate::warn_on) and
//! [`warn_on_once!`](crate::warn_on_once) evaluate to the condition, count a
//! hit on a per-call-site counter, and print one line to stderr (the `_once`
//! form only on its first hit). Tests assert that a path was taken with
//! [`capture`], which records the hits raised on the current thread:
//!
//! ```
//! use devpriv_core::{warn, warn_on_once};
//! fn lookup(x: u32) -> Option<u32> {
//!     if warn_on_once!(x == 0, "lookup of zero") { return None; }
//!     Some(x)
//! }
//! let (r, hits) = warn::capture(|| lookup(0));
//! assert_eq!(r, None);
//! assert_eq!(hits.count_matching("lookup of zero"), 1);
//! ```

#![expect(
    clippy::disallowed_types,
    reason = "diagnostic counters are not part of any modelled protocol, and statics need const constructors that loom's atomics lack"
)]

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static TOTAL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static CAPTURED: RefCell<Vec<Vec<&'static WarnSite>>> = const { RefCell::new(Vec::new()) };
}

/// One `WARN_ON` call site.
///
/// Kernel: the `__warned` static that `WARN_ON_ONCE()` keeps per call site (main).
pub struct WarnSite {
    file: &'static str,
    line: u32,
    label: &'static str,
    hits: AtomicU64,
    warned: AtomicBool,
}

impl fmt::Debug for WarnSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} ({} hits)",
            self.file,
            self.line,
            self.label,
            self.hits()
        )
    }
}

impl WarnSite {
    /// A call site. Used by the macros; not called directly.
    #[doc(hidden)]
    pub const fn new(file: &'static str, line: u32, label: &'static str) -> Self {
        WarnSite {
            file,
            line,
            label,
            hits: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// Records a hit. Used by the macros; not called directly.
    #[doc(hidden)]
    #[cold]
    #[inline(never)]
    pub fn hit(&'static self, once: bool) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        TOTAL.fetch_add(1, Ordering::Relaxed);
        CAPTURED.with(|c| {
            if let Some(top) = c.borrow_mut().last_mut() {
                top.push(self);
            }
        });
        let first = !self.warned.swap(true, Ordering::Relaxed);
        if first || !once {
            eprintln!("WARNING: {}:{}: {}", self.file, self.line, self.label);
        }
    }

    /// Hits at this site since the process started, on every thread.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The label: the condition's text, or the message given to the macro.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// `file:line` of the site.
    pub fn location(&self) -> (&'static str, u32) {
        (self.file, self.line)
    }
}

/// The `WARN_ON` hits raised on one thread while a closure ran.
///
/// Kernel: none (model only; the test-side view of the kernel log).
#[derive(Clone, Debug, Default)]
pub struct Warnings(Vec<&'static WarnSite>);

impl Warnings {
    /// Number of hits.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// `true` if no `WARN_ON` fired.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hits whose label contains `needle`.
    pub fn count_matching(&self, needle: &str) -> usize {
        self.0.iter().filter(|s| s.label.contains(needle)).count()
    }

    /// The sites hit, in order, one entry per hit.
    pub fn sites(&self) -> &[&'static WarnSite] {
        &self.0
    }
}

/// Runs `f` and returns what it returned plus the `WARN_ON` hits it raised
/// on this thread. Captures nest.
///
/// Kernel: none (model only).
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Warnings) {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            CAPTURED.with(|c| {
                c.borrow_mut().pop();
            });
        }
    }
    CAPTURED.with(|c| c.borrow_mut().push(Vec::new()));
    let pop = Pop;
    let r = f();
    let hits = CAPTURED.with(|c| {
        c.borrow_mut()
            .last_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    });
    drop(pop);
    // An enclosing capture sees the inner hits too.
    CAPTURED.with(|c| {
        if let Some(outer) = c.borrow_mut().last_mut() {
            outer.extend_from_slice(&hits);
        }
    });
    (r, Warnings(hits))
}

/// Hits at every site since the process started, on every thread.
///
/// Kernel: none (the taint flag, in spirit).
pub fn total_hits() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// Evaluates `cond`; if true, counts and prints a warning. Evaluates to
/// `cond`, so it can guard an early return.
///
/// Kernel: `WARN_ON(cond)` (main).
#[macro_export]
macro_rules! warn_on {
    ($cond:expr $(,)?) => {
        $crate::warn_on!($cond, stringify!($cond))
    };
    ($cond:expr, $label:expr $(,)?) => {{
        let cond: bool = $cond;
        if cond {
            static SITE: $crate::warn::WarnSite =
                $crate::warn::WarnSite::new(file!(), line!(), $label);
            SITE.hit(false);
        }
        cond
    }};
}

/// As [`warn_on!`], but prints only the first time the site fires (every
/// hit is still counted).
///
/// Kernel: `WARN_ON_ONCE(cond)` (main).
#[macro_export]
macro_rules! warn_on_once {
    ($cond:expr $(,)?) => {
        $crate::warn_on_once!($cond, stringify!($cond))
    };
    ($cond:expr, $label:expr $(,)?) => {{
        let cond: bool = $cond;
        if cond {
            static SITE: $crate::warn::WarnSite =
                $crate::warn::WarnSite::new(file!(), line!(), $label);
            SITE.hit(true);
        }
        cond
    }};
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn checked(x: i32) -> bool {
        crate::warn_on!(x < 0)
    }

    #[test]
    fn capture_counts_hits_of_this_thread_only() {
        let (r, w) = capture(|| (checked(-1), checked(1), checked(-2)));
        assert_eq!(r, (true, false, true));
        assert_eq!(w.count(), 2);
        assert_eq!(w.count_matching("x < 0"), 2);
        let (_, other) = capture(|| std::thread::spawn(|| checked(-1)).join().unwrap());
        assert!(other.is_empty(), "hits on another thread are not captured");
    }

    #[test]
    fn captures_nest() {
        let ((_, inner), outer) = capture(|| {
            checked(-1);
            capture(|| checked(-1))
        });
        assert_eq!(inner.count(), 1);
        assert_eq!(outer.count(), 2);
    }

    #[test]
    fn once_still_counts_every_hit() {
        let f = |x: i32| crate::warn_on_once!(x == 7, "seven");
        let (_, w) = capture(|| (f(7), f(7), f(1)));
        assert_eq!(w.count_matching("seven"), 2);
        assert_eq!(w.sites()[0].hits(), w.sites()[1].hits());
        assert!(total_hits() >= 2);
    }
}
