//! Ansible INI inventories (`host/src/inventory.rs` `parse_ini`).
//!
//! Properties: any file is read, never a panic, in time and memory bounded by the file (a range pattern names at
//! most 1 000 hosts); results come in line order, each host named, with an address; hosts written under groups,
//! with `ansible_host`, `ansible_port`, `ansible_user` and other variables, read back with every group they are
//! listed in as tags.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::inventory::parse_ini;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let parsed = parse_ini(text);
        let lines = text.lines().count();
        assert!(parsed.len() <= 1000 * lines.max(1), "{} results from {lines} lines", parsed.len());
        assert!(parsed.windows(2).all(|w| w[0].line <= w[1].line));
        for p in &parsed {
            assert!(p.line >= 1 && p.line <= lines);
            if let Ok(host) = &p.host {
                assert!(!host.name.is_empty() && !host.ip.is_empty(), "{host:?}");
            }
        }
    }
    let _ = written_then_read(&mut Unstructured::new(data));
});

struct Host {
    name: String,
    ip: String,
    port: Option<u32>,
    user: Option<String>,
    tags: Vec<String>,
}

fn written_then_read(u: &mut Unstructured<'_>) -> Result<()> {
    let mut text = String::new();
    let mut hosts: Vec<Host> = Vec::new();
    for _ in 0..u.int_in_range(1..=3)? {
        let group = match u.int_in_range(0..=4u8)? {
            // Hosts before any heading; later, a heading is needed to leave a `[web:vars]` section.
            0 if text.is_empty() => None,
            0 => Some("ungrouped".to_owned()),
            1 => Some("all".to_owned()),
            _ => Some(common::word(u, "abcweb_-1", 1, 6)?),
        };
        if let Some(group) = &group {
            text.push_str(&format!("[{group}]\n"));
        }
        let tag = group.filter(|g| g != "all" && g != "ungrouped");
        for _ in 0..u.int_in_range(0..=3)? {
            let name = format!("h{}", common::word(u, "abc1.-", 0, 6)?);
            let ip = format!("10.0.{}.{}", u.arbitrary::<u8>()?, u.arbitrary::<u8>()?);
            let port: Option<u32> = if u.arbitrary()? { Some(u.arbitrary()?) } else { None };
            let user = if u.arbitrary()? { Some(common::word(u, "deploy", 1, 6)?) } else { None };
            let mut line = format!("{name} ansible_host={ip}");
            if let Some(port) = port {
                line.push_str(&format!(" ansible_port={port}"));
            }
            if let Some(user) = &user {
                line.push_str(&format!("  ansible_user={user}"));
            }
            if u.arbitrary()? {
                line.push_str("\tansible_become=true");
            }
            text.push_str(&line);
            text.push_str(u.choose(&["\n", "  \n", "\n# a comment\n", "\n; another\n\n"])?);
            // A host listed again is one host: its first line's variables, every group as a tag.
            match hosts.iter_mut().find(|h| h.name == name) {
                Some(seen) => seen.tags.extend(tag.clone()),
                None => hosts.push(Host { name, ip, port, user, tags: tag.iter().cloned().collect() }),
            }
        }
        if u.arbitrary()? {
            text.push_str("[web:vars]\nhttp_port=80\n[web:children]\nweb1\n");
        }
    }
    let parsed = parse_ini(&text);
    let got: Vec<_> = parsed
        .iter()
        .map(|p| {
            let h = p.host.as_ref().unwrap_or_else(|e| panic!("{text}\nline {}: {e}", p.line));
            (h.name.clone(), h.ip.clone(), h.port, h.user.clone(), h.tags.clone())
        })
        .collect();
    let want: Vec<_> = hosts.into_iter().map(|h| (h.name, h.ip, h.port, h.user, h.tags)).collect();
    assert_eq!(got, want, "{text}");
    Ok(())
}
