//! Names the Arm cores of this machine from the MIDR fields Linux prints in `/proc/cpuinfo`
//! (`CPU implementer` and `CPU part`), for `vitedge info`. Compiled on every architecture so the
//! parser is tested everywhere; on other CPUs (or under qemu-user, which shows guests the host's
//! `/proc/cpuinfo`) no Arm part is found and callers say so.

/// Core names by (implementer, part number), from Linux's `arch/arm64/include/asm/cputype.h`
/// (the `ARM_CPU_PART_*` / `NVIDIA_CPU_PART_*` / `QCOM_CPU_PART_*` definitions).
const PARTS: &[(u32, u32, &str)] = &[
    (0x41, 0xd03, "Cortex-A53"),
    (0x41, 0xd04, "Cortex-A35"),
    (0x41, 0xd05, "Cortex-A55"),
    (0x41, 0xd07, "Cortex-A57"),
    (0x41, 0xd08, "Cortex-A72"),
    (0x41, 0xd09, "Cortex-A73"),
    (0x41, 0xd0a, "Cortex-A75"),
    (0x41, 0xd0b, "Cortex-A76"),
    (0x41, 0xd0c, "Neoverse-N1"),
    (0x41, 0xd0d, "Cortex-A77"),
    (0x41, 0xd0e, "Cortex-A76AE"),
    (0x41, 0xd40, "Neoverse-V1"),
    (0x41, 0xd41, "Cortex-A78"),
    (0x41, 0xd42, "Cortex-A78AE"),
    (0x41, 0xd44, "Cortex-X1"),
    (0x41, 0xd46, "Cortex-A510"),
    (0x41, 0xd47, "Cortex-A710"),
    (0x41, 0xd48, "Cortex-X2"),
    (0x41, 0xd49, "Neoverse-N2"),
    (0x41, 0xd4b, "Cortex-A78C"),
    (0x41, 0xd4c, "Cortex-X1C"),
    (0x41, 0xd4d, "Cortex-A715"),
    (0x41, 0xd4e, "Cortex-X3"),
    (0x41, 0xd4f, "Neoverse-V2"),
    (0x41, 0xd80, "Cortex-A520"),
    (0x41, 0xd81, "Cortex-A720"),
    (0x41, 0xd82, "Cortex-X4"),
    (0x41, 0xd84, "Neoverse-V3"),
    (0x41, 0xd85, "Cortex-X925"),
    (0x41, 0xd87, "Cortex-A725"),
    (0x41, 0xd8e, "Neoverse-N3"),
    (0x4e, 0x003, "NVIDIA Denver"),
    (0x4e, 0x004, "NVIDIA Carmel"),
    (0x51, 0x802, "Kryo 3xx Gold"),
    (0x51, 0x803, "Kryo 3xx Silver"),
    (0x51, 0x804, "Kryo 4xx Gold"),
    (0x51, 0x805, "Kryo 4xx Silver"),
];

/// The name of the core with this MIDR implementer and part number, if known.
pub fn core_name(implementer: u32, part: u32) -> Option<&'static str> {
    PARTS.iter().find(|&&(i, p, _)| i == implementer && p == part).map(|&(_, _, n)| n)
}

/// One kind of core and how many logical CPUs have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreGroup {
    /// MIDR implementer (0x41 = Arm).
    pub implementer: u32,
    /// MIDR primary part number.
    pub part: u32,
    /// Logical CPUs of this kind.
    pub count: usize,
}

impl std::fmt::Display for CoreGroup {
    /// `Cortex-A76 (MIDR part 0xd0b) ×4`; unknown parts show the implementer too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match core_name(self.implementer, self.part) {
            Some(n) => write!(f, "{n} (MIDR part {:#05x}) ×{}", self.part, self.count),
            None => write!(f, "unknown core (MIDR implementer {:#04x}, part {:#05x}) ×{}", self.implementer, self.part, self.count),
        }
    }
}

fn hex_field(line: &str, key: &str) -> Option<u32> {
    let (k, v) = line.split_once(':')?;
    if k.trim() != key {
        return None;
    }
    let v = v.trim();
    u32::from_str_radix(v.strip_prefix("0x").or_else(|| v.strip_prefix("0X"))?, 16).ok()
}

/// The core kinds listed in `/proc/cpuinfo` text, in order of first appearance (big.LITTLE
/// systems give two groups). Empty when no processor block has both MIDR fields (x86, or an Arm
/// kernel that hides them).
pub fn parse_cpuinfo(text: &str) -> Vec<CoreGroup> {
    let mut groups: Vec<CoreGroup> = Vec::new();
    // Processor blocks are separated by blank lines; the fields may come in either order.
    for block in text.split("\n\n") {
        let mut implementer = None;
        let mut part = None;
        for line in block.lines() {
            implementer = implementer.or_else(|| hex_field(line, "CPU implementer"));
            part = part.or_else(|| hex_field(line, "CPU part"));
        }
        if let (Some(implementer), Some(part)) = (implementer, part) {
            match groups.iter_mut().find(|g| g.implementer == implementer && g.part == part) {
                Some(g) => g.count += 1,
                None => groups.push(CoreGroup { implementer, part, count: 1 }),
            }
        }
    }
    groups
}

/// What `/proc/cpuinfo` says about this machine's cores: `Cortex-A76 (MIDR part 0xd0b) ×4`, groups
/// joined by ` + `, or why no core could be named.
pub fn describe_this_machine() -> String {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(text) => {
            let groups = parse_cpuinfo(&text);
            if groups.is_empty() {
                "unknown (no Arm CPU part in /proc/cpuinfo; under qemu-user it shows the host's CPUs)".to_string()
            } else {
                groups.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ")
            }
        }
        Err(e) => format!("unknown (cannot read /proc/cpuinfo: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Raspberry Pi 5 (BCM2712) `/proc/cpuinfo`, two of its four blocks.
    const PI5: &str = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\nprocessor\t: 1\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\nRevision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n";

    #[test]
    fn names_a_pi5() {
        let g = parse_cpuinfo(PI5);
        assert_eq!(g, vec![CoreGroup { implementer: 0x41, part: 0xd0b, count: 2 }]);
        assert_eq!(g[0].to_string(), "Cortex-A76 (MIDR part 0xd0b) ×2");
    }

    #[test]
    fn big_little_gives_two_groups_in_order() {
        let text = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd05\n\nprocessor\t: 1\nCPU part\t: 0xd05\nCPU implementer\t: 0x41\n\nprocessor\t: 2\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n";
        let g = parse_cpuinfo(text);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].to_string(), "Cortex-A55 (MIDR part 0xd05) ×2");
        assert_eq!(g[1].to_string(), "Cortex-A76 (MIDR part 0xd0b) ×1");
    }

    #[test]
    fn board_cores_are_named() {
        assert_eq!(core_name(0x41, 0xd08), Some("Cortex-A72"));
        assert_eq!(core_name(0x41, 0xd07), Some("Cortex-A57"));
        assert_eq!(core_name(0x41, 0xd42), Some("Cortex-A78AE"));
        assert_eq!(core_name(0x41, 0xd0c), Some("Neoverse-N1"));
        assert_eq!(core_name(0x42, 0xd08), None);
    }

    #[test]
    fn x86_text_and_garbage_give_no_group() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n\n";
        assert!(parse_cpuinfo(x86).is_empty());
        assert!(parse_cpuinfo("").is_empty());
        assert!(parse_cpuinfo("CPU implementer: 0xzz\nCPU part: 0xd0b\n").is_empty());
        assert!(parse_cpuinfo("CPU implementer: 0x41\n").is_empty());
    }

    #[test]
    fn unknown_parts_show_their_numbers() {
        let g = parse_cpuinfo("CPU implementer\t: 0x61\nCPU part\t: 0x022\n");
        assert_eq!(g[0].to_string(), "unknown core (MIDR implementer 0x61, part 0x022) ×1");
    }
}
