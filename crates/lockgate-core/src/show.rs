//! [`Show`]: how an element is written by `print` and `save_as_text_files`.
//!
//! It follows Scala's `toString` so output looks like Spark's: strings and numbers
//! as they are, tuples as `(a,1)`, options as `Some(x)` / `None`, sequences as `[a, b]`.
//! Implement it for your own types (often by delegating to `Display`, see
//! [`show_via_display!`](crate::show_via_display)).

use std::fmt::{self, Write};

/// Writes an element the way Spark's `print` would show it.
pub trait Show {
    /// Writes `self` to `out`.
    fn show(&self, out: &mut dyn Write) -> fmt::Result;

    /// `self` as a `String`.
    fn show_string(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.show(&mut s);
        s
    }
}

/// Implements [`Show`] for types by delegating to their `Display`.
#[macro_export]
macro_rules! show_via_display {
    ($($t:ty),* $(,)?) => {
        $(impl $crate::Show for $t {
            fn show(&self, out: &mut dyn ::std::fmt::Write) -> ::std::fmt::Result {
                write!(out, "{}", self)
            }
        })*
    };
}

show_via_display!(
    String,
    str,
    char,
    bool,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    compact_str::CompactString
);

impl<T: Show + ?Sized> Show for &T {
    fn show(&self, out: &mut dyn Write) -> fmt::Result {
        (**self).show(out)
    }
}

impl<T: Show + ?Sized> Show for Box<T> {
    fn show(&self, out: &mut dyn Write) -> fmt::Result {
        (**self).show(out)
    }
}

impl<T: Show + ?Sized> Show for std::sync::Arc<T> {
    fn show(&self, out: &mut dyn Write) -> fmt::Result {
        (**self).show(out)
    }
}

impl Show for () {
    fn show(&self, out: &mut dyn Write) -> fmt::Result {
        out.write_str("()")
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self, out: &mut dyn Write) -> fmt::Result {
        match self {
            Some(v) => {
                out.write_str("Some(")?;
                v.show(out)?;
                out.write_char(')')
            }
            None => out.write_str("None"),
        }
    }
}

impl<T: Show> Show for Vec<T> {
    fn show(&self, out: &mut dyn Write) -> fmt::Result {
        self.as_slice().show(out)
    }
}

impl<T: Show> Show for [T] {
    fn show(&self, out: &mut dyn Write) -> fmt::Result {
        out.write_char('[')?;
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.write_str(", ")?;
            }
            v.show(out)?;
        }
        out.write_char(']')
    }
}

macro_rules! show_tuple {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Show),+> Show for ($($name,)+) {
            fn show(&self, out: &mut dyn Write) -> fmt::Result {
                out.write_char('(')?;
                let mut first = true;
                $(
                    if !first { out.write_char(',')?; }
                    first = false;
                    self.$idx.show(out)?;
                )+
                let _ = first;
                out.write_char(')')
            }
        }
    };
}

show_tuple!(A 0);
show_tuple!(A 0, B 1);
show_tuple!(A 0, B 1, C 2);
show_tuple!(A 0, B 1, C 2, D 3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_like_scala_to_string() {
        assert_eq!(("a".to_string(), 1).show_string(), "(a,1)");
        assert_eq!(Some(3).show_string(), "Some(3)");
        assert_eq!(None::<i32>.show_string(), "None");
        assert_eq!(vec![1, 2].show_string(), "[1, 2]");
        assert_eq!((1, (2, Some("x"))).show_string(), "(1,(2,Some(x)))");
    }
}
