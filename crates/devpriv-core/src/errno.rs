//! Kernel error numbers.
//!
//! Kernel: `include/uapi/asm-generic/errno-base.h`, `include/uapi/asm-generic/errno.h` (main).

use core::fmt;

/// A kernel error number, spelled as the kernel spells it.
///
/// `return -EBUSY;` in C is `Err(Errno::EBUSY)` here; [`Errno::to_kernel`]
/// gives the negative value a kernel function would return.
///
/// Kernel: `EPERM`, `ENOENT`, ... (`include/uapi/asm-generic/errno-base.h`, main).
///
/// Deliberately not `#[non_exhaustive]`: tests match exhaustively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such file or directory (also: "nothing to migrate").
    ENOENT = 2,
    /// No such device or address.
    ENXIO = 6,
    /// Try again.
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Bad address.
    EFAULT = 14,
    /// Device or resource busy.
    EBUSY = 16,
    /// Object exists.
    EEXIST = 17,
    /// Invalid argument.
    EINVAL = 22,
    /// No space left on device (a device allocator, such as `drm_buddy`, is full).
    ENOSPC = 28,
    /// Math result not representable (`request_free_mem_region()` found no room).
    ERANGE = 34,
    /// Operation not supported (optional driver ops, such as `memory_failure`).
    EOPNOTSUPP = 95,
}

impl Errno {
    /// Every errno this model produces, in numeric order.
    pub const ALL: [Errno; 12] = [
        Errno::EPERM,
        Errno::ENOENT,
        Errno::ENXIO,
        Errno::EAGAIN,
        Errno::ENOMEM,
        Errno::EFAULT,
        Errno::EBUSY,
        Errno::EEXIST,
        Errno::EINVAL,
        Errno::ENOSPC,
        Errno::ERANGE,
        Errno::EOPNOTSUPP,
    ];

    /// The value a kernel function returns for this error: `-EBUSY` is `-16`.
    ///
    /// Kernel: the `-Exxx` return convention (main).
    pub const fn to_kernel(self) -> i32 {
        -(self as i32)
    }

    /// The errno for a kernel return value such as `-16`, if this model knows it.
    ///
    /// Kernel: `IS_ERR_VALUE()` / `PTR_ERR()` in spirit; model helper (main).
    pub fn from_kernel(ret: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.to_kernel() == ret)
    }

    /// The symbolic name, such as `"EBUSY"`.
    ///
    /// Kernel: none (model only).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::ENXIO => "ENXIO",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::EINVAL => "EINVAL",
            Errno::ENOSPC => "ENOSPC",
            Errno::ERANGE => "ERANGE",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
        }
    }

    /// The C library's description, such as `"Device or resource busy"`.
    ///
    /// Kernel: none (`strerror(3)` text).
    pub const fn description(self) -> &'static str {
        match self {
            Errno::EPERM => "Operation not permitted",
            Errno::ENOENT => "No such file or directory",
            Errno::ENXIO => "No such device or address",
            Errno::EAGAIN => "Resource temporarily unavailable",
            Errno::ENOMEM => "Cannot allocate memory",
            Errno::EFAULT => "Bad address",
            Errno::EBUSY => "Device or resource busy",
            Errno::EEXIST => "File exists",
            Errno::EINVAL => "Invalid argument",
            Errno::ENOSPC => "No space left on device",
            Errno::ERANGE => "Math result not representable",
            Errno::EOPNOTSUPP => "Operation not supported",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description())
    }
}

impl std::error::Error for Errno {}

/// `Result` with [`Errno`] as the default error.
///
/// Kernel: the `int` return convention (0 or `-Exxx`, main).
pub type Result<T = (), E = Errno> = core::result::Result<T, E>;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn kernel_values_round_trip() {
        assert_eq!(Errno::EBUSY.to_kernel(), -16);
        assert_eq!(Errno::EINVAL.to_kernel(), -22);
        assert_eq!(Errno::ENOENT.to_kernel(), -2);
        for e in Errno::ALL {
            assert_eq!(Errno::from_kernel(e.to_kernel()), Some(e));
        }
        assert_eq!(Errno::from_kernel(0), None);
        assert_eq!(
            Errno::from_kernel(16),
            None,
            "positive values are not errors"
        );
    }

    #[test]
    fn display_names_the_errno() {
        assert_eq!(Errno::EBUSY.to_string(), "EBUSY (Device or resource busy)");
    }
}
