//! One macro for the workspace's flag sets (`VM_*`, `PVMW_*`,
//! `MIGRATE_VMA_SELECT_*`, `FAULT_FLAG_*`).
//!
//! Kernel: none (model only). The kernel spells each set as `#define`s or
//! an `enum` over an integer; [`flags!`](crate::flags!) gives each one a
//! newtype with the same bits and the same small API, so the sets cannot be
//! mixed up and no set re-implements `contains()`.

/// Defines a set of flags over an unsigned integer: a `Copy` newtype whose
/// associated constants are the flags, with `bits()`, `from_bits()` (which
/// refuses bits no flag defines), `contains()`, `union()` and `|`.
///
/// Kernel: none (model only).
///
/// ```
/// devpriv_core::flags! {
///     /// Example flags.
///     ///
///     /// Kernel: none (model only).
///     pub struct Example: u32 {
///         /// Kernel: none (model only).
///         const A = 1 << 0;
///         /// Kernel: none (model only).
///         const B = 1 << 1;
///     }
/// }
/// let ab = Example::A | Example::B;
/// assert!(ab.contains(Example::A) && !Example::A.contains(ab));
/// assert_eq!(Example::from_bits(3), Ok(ab));
/// assert_eq!(Example::from_bits(4), Err(devpriv_core::Errno::EINVAL));
/// assert_eq!(ab.bits(), 3);
/// ```
#[macro_export]
macro_rules! flags {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident: $t:ty {
            $(
                $(#[$cmeta:meta])*
                const $flag:ident = $value:expr;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        $vis struct $name($t);

        impl $name {
            $(
                $(#[$cmeta])*
                pub const $flag: $name = $name($value);
            )*

            /// Every bit some flag defines.
            const DEFINED: $t = 0 $(| $value)*;

            /// The raw bits.
            ///
            /// Kernel: none (model only).
            pub const fn bits(self) -> $t {
                self.0
            }

            /// Flags from raw bits.
            ///
            /// Kernel: none (model only).
            ///
            /// # Errors
            ///
            /// [`Errno::EINVAL`]($crate::Errno::EINVAL) for bits no flag
            /// defines.
            pub const fn from_bits(bits: $t) -> Result<$name, $crate::Errno> {
                if bits & !Self::DEFINED != 0 {
                    return Err($crate::Errno::EINVAL);
                }
                Ok($name(bits))
            }

            /// `true` if every bit of `other` is set.
            ///
            /// Kernel: none (model only).
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// The union.
            ///
            /// Kernel: none (model only).
            #[must_use]
            pub const fn union(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }
        }

        impl core::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                self.union(rhs)
            }
        }
    };
}
