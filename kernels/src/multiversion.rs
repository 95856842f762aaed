//! One function body compiled for AVX2+FMA and for the baseline target, the faster chosen per
//! call by a CPU check made once: `target-cpu=native` is never used, so vector code that the
//! compiler writes from plain loops needs this to see the wider instructions.

/// Compiles `$body` (a function of the arguments) for AVX2+FMA and for the baseline, and
/// picks one per call by a cached CPU check.
macro_rules! multiversion_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn fast($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if *$crate::multiversion::HAS_AVX2_FMA {
                    // SAFETY: the CPU has AVX2 and FMA (checked at run time).
                    return unsafe { fast($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) static HAS_AVX2_FMA: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
});
