//! `[limits] min_free_space`: how much of the spool's filesystem stays free for the relay's
//! own work (delivery state, envelope updates, bounces) once new mail is refused.
//!
//! Accepted forms: a size (`"1 GiB"`, `"500 MB"`, or a number of bytes), a percentage of the
//! filesystem (`"5%"`, `"2.5%"`), or `0` / `"0"` to disable the reserve (only a full disk,
//! `ENOSPC`, then stops new mail). The default is 5% of the filesystem or 1 GiB, whichever is
//! smaller: 5% alone would hold back 50 GiB of a 1 TiB disk, 1 GiB alone more than a small
//! container volume can spare.
//!
//! Invariant: pure; the size of the filesystem comes from the caller
//! ([`MinFreeSpace::required_bytes`]), so every rule is table-tested without a disk.

use std::fmt;

use bytesize::ByteSize;

/// The cap of the default reserve.
pub const DEFAULT_RESERVE_CAP: u64 = 1024 * 1024 * 1024;
/// The default reserve's share of the filesystem, in basis points (5%).
const DEFAULT_RESERVE_BASIS_POINTS: u64 = 500;

/// The disk reserve on the spool's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinFreeSpace {
    /// 5% of the filesystem or 1 GiB, whichever is smaller.
    #[default]
    Default,
    /// A fixed number of bytes; 0 disables the reserve.
    Bytes(u64),
    /// A share of the filesystem's size, in basis points (`"5%"` is 500).
    Percent(u32),
}

/// `min_free_space` as written in TOML: a number of bytes or a string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum RawFreeSpace {
    Bytes(u64),
    Text(String),
}

impl MinFreeSpace {
    /// Parse the TOML value.
    ///
    /// # Errors
    /// A message for the user when it is neither a size nor a percentage below 100%.
    pub fn from_raw(raw: &RawFreeSpace) -> Result<MinFreeSpace, String> {
        match raw {
            RawFreeSpace::Bytes(bytes) => Ok(MinFreeSpace::Bytes(*bytes)),
            RawFreeSpace::Text(text) => MinFreeSpace::parse(text),
        }
    }

    /// Parse `"1 GiB"`, `"5%"`, `"0"`.
    ///
    /// # Errors
    /// A message for the user when it is neither a size nor a percentage below 100%.
    pub fn parse(text: &str) -> Result<MinFreeSpace, String> {
        let text = text.trim();
        if let Some(number) = text.strip_suffix('%') {
            let percent: f64 = number.trim().parse().map_err(|_| {
                format!("{text:?} is not a percentage; write e.g. \"5%\", a size like \"1 GiB\", or 0 to disable")
            })?;
            if !(0.0..100.0).contains(&percent) {
                return Err(format!(
                    "{text:?}: a percentage must be at least 0% and below 100%"
                ));
            }
            // Whole basis points; "0.001%" rounds to 0 and so disables, like "0%".
            let basis_points = (percent * 100.0).round() as u32;
            return Ok(MinFreeSpace::Percent(basis_points));
        }
        text.parse::<ByteSize>()
            .map(|size| MinFreeSpace::Bytes(size.as_u64()))
            .map_err(|_| {
                format!("{text:?} is not a size; write e.g. \"1 GiB\", \"500 MiB\", a percentage like \"5%\", or 0 to disable")
            })
    }

    /// The bytes to keep free on a filesystem of `total_bytes`; 0 means no reserve.
    pub fn required_bytes(self, total_bytes: u64) -> u64 {
        let share = |basis_points: u64| {
            u64::try_from(u128::from(total_bytes) * u128::from(basis_points) / 10_000)
                .unwrap_or(u64::MAX)
        };
        match self {
            MinFreeSpace::Default => share(DEFAULT_RESERVE_BASIS_POINTS).min(DEFAULT_RESERVE_CAP),
            MinFreeSpace::Bytes(bytes) => bytes,
            MinFreeSpace::Percent(basis_points) => share(u64::from(basis_points)),
        }
    }

    /// True when the setting keeps no reserve at all.
    pub fn is_disabled(self) -> bool {
        matches!(self, MinFreeSpace::Bytes(0) | MinFreeSpace::Percent(0))
    }
}

impl fmt::Display for MinFreeSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinFreeSpace::Default => write!(f, "5% of the filesystem or 1 GiB (default)"),
            MinFreeSpace::Bytes(0) | MinFreeSpace::Percent(0) => write!(f, "0 (disabled)"),
            MinFreeSpace::Bytes(bytes) => write!(f, "{}", ByteSize::b(*bytes).display().iec()),
            MinFreeSpace::Percent(basis_points) => {
                write!(f, "{}.{:02}%", basis_points / 100, basis_points % 100)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn the_default_is_5_percent_or_1_gib_whichever_is_smaller() {
        for (total, required) in [
            (0, 0),
            (8 * MIB, 8 * MIB / 20),
            (10 * GIB, 512 * MIB),
            (20 * GIB, GIB), // the two meet at 20 GiB
            (21 * GIB, GIB),
            (1024 * GIB, GIB),
            (u64::MAX, GIB),
        ] {
            assert_eq!(
                MinFreeSpace::Default.required_bytes(total),
                required,
                "filesystem of {total} bytes"
            );
        }
    }

    #[test]
    fn sizes_percentages_and_zero_parse() {
        for (text, expected) in [
            ("1 GiB", MinFreeSpace::Bytes(GIB)),
            ("1GiB", MinFreeSpace::Bytes(GIB)),
            ("500 MiB", MinFreeSpace::Bytes(500 * MIB)),
            ("500 MB", MinFreeSpace::Bytes(500_000_000)),
            ("4096", MinFreeSpace::Bytes(4096)),
            ("0", MinFreeSpace::Bytes(0)),
            ("5%", MinFreeSpace::Percent(500)),
            (" 2.5 % ", MinFreeSpace::Percent(250)),
            ("0%", MinFreeSpace::Percent(0)),
            ("99.99%", MinFreeSpace::Percent(9999)),
        ] {
            assert_eq!(MinFreeSpace::parse(text), Ok(expected), "{text:?}");
        }
        for raw in [RawFreeSpace::Bytes(0), RawFreeSpace::Text("0".into())] {
            assert!(
                MinFreeSpace::from_raw(&raw).unwrap().is_disabled(),
                "{raw:?}"
            );
        }
        assert_eq!(
            MinFreeSpace::from_raw(&RawFreeSpace::Bytes(123)),
            Ok(MinFreeSpace::Bytes(123))
        );
        assert!(!MinFreeSpace::Default.is_disabled());
    }

    #[test]
    fn nonsense_is_refused_with_the_accepted_forms() {
        for text in [
            "lots", "", "-5%", "100%", "150%", "five%", "1 GiB%", "-1 GiB",
        ] {
            let error = MinFreeSpace::parse(text).unwrap_err();
            assert!(
                error.contains("1 GiB") || error.contains("below 100%"),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn percentages_and_sizes_resolve_against_the_filesystem() {
        assert_eq!(
            MinFreeSpace::Percent(500).required_bytes(100 * GIB),
            5 * GIB
        );
        assert_eq!(
            MinFreeSpace::Percent(250).required_bytes(8 * MIB),
            8 * MIB / 40
        );
        assert_eq!(MinFreeSpace::Percent(0).required_bytes(100 * GIB), 0);
        assert_eq!(
            MinFreeSpace::Bytes(4 * MIB).required_bytes(8 * MIB),
            4 * MIB
        );
        // No overflow on the largest filesystem.
        let huge = MinFreeSpace::Percent(9999).required_bytes(u64::MAX);
        assert!(huge < u64::MAX && huge > u64::MAX / 100 * 99, "{huge}");
    }

    /// The key through the whole configuration: TOML value → validated `Limits`.
    #[test]
    fn the_key_in_a_config_file() {
        let config = |limits: &str| {
            let text = format!(
                "[relay]\nstate_dir = \"/tmp/x\"\n[limits]\n{limits}\n[[listener]]\naddress = \"127.0.0.1:2525\"\n\
                 [[account]]\nname = \"m365\"\nmailbox = \"scanner@contoso.com\"\ntenant_id = \"contoso.onmicrosoft.com\"\n\
                 client_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret = \"abc~DEF.secret-value\"\n\
                 [[network]]\ncidr = \"192.168.10.0/24\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n"
            );
            crate::config::Config::from_toml(&text, std::path::Path::new("/"))
        };
        for (line, expected) in [
            ("", MinFreeSpace::Default),
            ("min_free_space = \"1 GiB\"", MinFreeSpace::Bytes(GIB)),
            ("min_free_space = \"5%\"", MinFreeSpace::Percent(500)),
            ("min_free_space = 0", MinFreeSpace::Bytes(0)),
            ("min_free_space = \"0\"", MinFreeSpace::Bytes(0)),
            ("min_free_space = 1048576", MinFreeSpace::Bytes(MIB)),
        ] {
            let limits = config(line)
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .limits;
            assert_eq!(limits.min_free_space, expected, "{line}");
        }
        for line in ["min_free_space = \"lots\"", "min_free_space = \"100%\""] {
            let errors = config(line).unwrap_err().0;
            assert_eq!(errors.len(), 1, "{line}: {errors:?}");
            assert_eq!(errors[0].path, "limits.min_free_space", "{line}");
        }
    }

    #[test]
    fn display_names_the_setting() {
        assert_eq!(MinFreeSpace::Percent(250).to_string(), "2.50%");
        assert_eq!(MinFreeSpace::Bytes(GIB).to_string(), "1.0 GiB");
        assert_eq!(MinFreeSpace::Bytes(0).to_string(), "0 (disabled)");
        assert!(MinFreeSpace::Default.to_string().contains("default"));
    }
}
