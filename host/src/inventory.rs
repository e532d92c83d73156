//! Importing an inventory: a CSV file or an Ansible INI inventory becomes host forms, each with the line it came
//! from, or an error saying what is wrong with that line. Nothing is stored here; `http/hosts.rs` validates each
//! form like any other and stores the good ones (after a preview, if asked), refusing through `Claimed` a host the
//! same file named already.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// A host to add to the inventory.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostForm {
    pub name: String,
    pub ip: String,
    pub wan_ip: Option<String>,
    pub op: Option<String>,
    /// Function category, e.g. "Linux.Web"; goes with `app`.
    pub function: Option<String>,
    /// App category within `function`, e.g. "nginx".
    pub app: Option<String>,
    /// SSH port for the ssh and ansible backends (their configured default when absent).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u32>,
    /// Login user for the ssh and ansible backends (their configured default when absent).
    pub user: Option<String>,
    /// Free tags, e.g. `["prod", "eu-west"]`: 1-64 of letters, digits, `.`, `_`, `-`; stored in lower case.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The names and addresses an import has taken so far, so that a later line naming one again is refused, in the
/// preview as in the import, as the store would refuse it: names compare case-insensitively (they are stored in
/// lower case), addresses by their canonical text (`validate_host` gives it).
#[derive(Debug, Default)]
pub struct Claimed {
    names: HashMap<String, usize>,
    ips: HashMap<String, usize>,
}

impl Claimed {
    /// Takes `name` and `ip` for `line`, or says which earlier line has one of them (and takes nothing).
    pub fn claim(&mut self, line: usize, name: &str, ip: &str) -> Result<(), String> {
        let name_key = name.trim().to_ascii_lowercase();
        if let Some(first) = self.names.get(&name_key) {
            return Err(format!("name: {name} is named already on line {first} of this file"));
        }
        if let Some(first) = self.ips.get(ip) {
            return Err(format!("ip: {ip} is already on line {first} of this file"));
        }
        self.names.insert(name_key, line);
        self.ips.insert(ip.to_owned(), line);
        Ok(())
    }
}

/// One line of the file that named a host: what it says, or why it cannot be read.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub line: usize,
    pub host: Result<HostForm, String>,
}

/// The CSV columns, in any order after a header line; `name` and `ip` are required, `tags` holds tags separated
/// by spaces or `;`.
pub const CSV_COLUMNS: &[&str] = &["name", "ip", "wan_ip", "op", "function", "app", "port", "user", "tags"];

/// Reads CSV (RFC 4180 quoting) with a header line naming the columns.
pub fn parse_csv(text: &str) -> Result<Vec<Parsed>, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((_, header)) = lines.next() else { return Err("the file is empty".into()) };
    let columns: Vec<String> = split_csv(header)?.into_iter().map(|c| c.trim().to_ascii_lowercase()).collect();
    for column in &columns {
        if !CSV_COLUMNS.contains(&column.as_str()) {
            return Err(format!("unknown column {column:?} in the header (known: {})", CSV_COLUMNS.join(", ")));
        }
    }
    if !columns.iter().any(|c| c == "name") || !columns.iter().any(|c| c == "ip") {
        return Err("the header must name the columns, with at least name and ip".into());
    }
    Ok(lines
        .map(|(i, line)| {
            let host = split_csv(line).and_then(|cells| {
                if cells.len() != columns.len() {
                    return Err(format!("{} fields, the header has {}", cells.len(), columns.len()));
                }
                let mut form = HostForm::default();
                for (column, cell) in columns.iter().zip(cells) {
                    let cell = cell.trim().to_owned();
                    if cell.is_empty() {
                        continue;
                    }
                    match column.as_str() {
                        "name" => form.name = cell,
                        "ip" => form.ip = cell,
                        "wan_ip" => form.wan_ip = Some(cell),
                        "op" => form.op = Some(cell),
                        "function" => form.function = Some(cell),
                        "app" => form.app = Some(cell),
                        "port" => form.port = Some(cell.parse().map_err(|_| format!("port {cell:?} is not a number"))?),
                        "user" => form.user = Some(cell),
                        _ => form.tags = cell.split([' ', ';']).filter(|t| !t.is_empty()).map(str::to_owned).collect(),
                    }
                }
                Ok(form)
            });
            Parsed { line: i + 1, host }
        })
        .collect())
}

/// One CSV record of one line (quoted fields may hold commas and doubled quotes, not line breaks).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, ',') => cells.push(std::mem::take(&mut cell)),
            (false, '"') if cell.trim().is_empty() => {
                cell.clear();
                quoted = true;
            }
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (_, c) => cell.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    cells.push(cell);
    Ok(cells)
}

/// Reads an Ansible INI inventory: hosts under `[group]` headings (the group becomes a tag; `all` and
/// `ungrouped` add none), `ansible_host`, `ansible_port` and `ansible_user` per host, numeric ranges such as
/// `web[01:03]`. `[group:vars]` and `[group:children]` sections hold no hosts and are skipped. A host listed in
/// several groups is one host with every group as a tag.
pub fn parse_ini(text: &str) -> Vec<Parsed> {
    let mut hosts: BTreeMap<String, Parsed> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    let mut group: Option<String> = None;
    let mut skipping = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(heading) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            skipping = heading.contains(':');
            group = Some(heading.trim().to_owned()).filter(|g| g != "all" && g != "ungrouped");
            continue;
        }
        if skipping {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(pattern) = words.next() else { continue };
        let mut form = HostForm::default();
        let mut problem = None;
        for word in words {
            match word.split_once('=') {
                Some(("ansible_host", v)) => form.ip = v.to_owned(),
                Some(("ansible_port", v)) => match v.parse() {
                    Ok(port) => form.port = Some(port),
                    Err(_) => problem = Some(format!("ansible_port {v:?} is not a number")),
                },
                Some(("ansible_user", v)) => form.user = Some(v.to_owned()),
                // Other variables (keys, become settings) are the playbook's business, not the inventory's.
                Some(_) => {}
                None => problem = Some(format!("{word:?} is not a key=value variable")),
            }
        }
        let names = match expand(pattern) {
            Ok(names) => names,
            Err(e) => {
                errors.push(Parsed { line: i + 1, host: Err(e) });
                continue;
            }
        };
        for name in names {
            if let Some(problem) = &problem {
                errors.push(Parsed { line: i + 1, host: Err(problem.clone()) });
                break;
            }
            let mut host = form.clone();
            host.name = name.clone();
            if host.ip.is_empty() {
                if name.parse::<std::net::IpAddr>().is_err() {
                    errors.push(Parsed {
                        line: i + 1,
                        host: Err(format!("{name}: no ansible_host, and the name is not an address")),
                    });
                    continue;
                }
                host.ip = name.clone();
            }
            host.tags = group.iter().cloned().collect();
            match hosts.get_mut(&name) {
                Some(Parsed { host: Ok(seen), .. }) => {
                    seen.tags.extend(host.tags);
                }
                _ => {
                    order.push(name.clone());
                    hosts.insert(name, Parsed { line: i + 1, host: Ok(host) });
                }
            }
        }
    }
    let mut out: Vec<Parsed> = order.into_iter().filter_map(|n| hosts.remove(&n)).collect();
    out.extend(errors);
    out.sort_by_key(|p| p.line);
    out
}

/// Most names one pattern may expand to.
const MAX_NAMES: usize = 1000;

/// `web[01:03].example` → web01.example, web02.example, web03.example (at most 1 000 names per pattern, all its
/// ranges together: `[0:999][0:999][0:999]` would otherwise be a billion names from one short line).
fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some((head, rest)) = pattern.split_once('[') else { return Ok(vec![pattern.to_owned()]) };
    let (range, tail) = rest.split_once(']').ok_or_else(|| format!("{pattern}: a range is not closed"))?;
    let (from, to) = range.split_once(':').ok_or_else(|| format!("{pattern}: a range is [first:last]"))?;
    let (a, b): (u32, u32) = match (from.parse(), to.parse()) {
        (Ok(a), Ok(b)) if a <= b && b - a < 1000 => (a, b),
        _ => return Err(format!("{pattern}: [{range}] is not a numeric range of at most 1000")),
    };
    let width = if from.starts_with('0') { from.len() } else { 0 };
    let tails = expand(tail)?;
    let count = (b - a + 1) as usize;
    if count.saturating_mul(tails.len()) > MAX_NAMES {
        return Err(format!("{pattern}: names more than {MAX_NAMES} hosts"));
    }
    let mut names = Vec::with_capacity(count * tails.len());
    for n in a..=b {
        for rest in &tails {
            names.push(format!("{head}{n:0width$}{rest}"));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_line_with_a_taken_name_or_ip_is_refused() {
        let mut claimed = Claimed::default();
        assert_eq!(claimed.claim(2, "web1", "10.0.0.1"), Ok(()));
        assert_eq!(
            claimed.claim(3, "WEB1", "10.0.0.9"),
            Err("name: WEB1 is named already on line 2 of this file".into())
        );
        assert_eq!(claimed.claim(4, "web2", "10.0.0.1"), Err("ip: 10.0.0.1 is already on line 2 of this file".into()));
        assert_eq!(claimed.claim(5, "web2", "10.0.0.2"), Ok(()), "a refused line takes nothing");
    }

    #[test]
    fn csv_with_quotes_and_a_bad_line() {
        let text = "name,ip,function,app,tags\nweb1,10.0.0.1,Linux.Web,nginx,\"prod;eu\"\nweb2,10.0.0.2\n\"db,1\",10.0.0.3,,,\n";
        let parsed = parse_csv(text).unwrap();
        assert_eq!(parsed.len(), 3);
        let web1 = parsed[0].host.as_ref().unwrap();
        assert_eq!(
            (web1.name.as_str(), web1.app.as_deref(), web1.tags.clone()),
            ("web1", Some("nginx"), vec!["prod".to_owned(), "eu".to_owned()])
        );
        assert_eq!(parsed[1].host.as_ref().unwrap_err(), "2 fields, the header has 5");
        assert_eq!(parsed[1].line, 3);
        assert_eq!(parsed[2].host.as_ref().unwrap().name, "db,1", "quoted commas stay in the field");
        assert!(parse_csv("host,address\nx,y\n").unwrap_err().contains("unknown column"));
    }

    #[test]
    fn ansible_ini_groups_ranges_and_errors() {
        let text = "\
# a comment
10.0.0.9
[web]
web[01:03] ansible_user=deploy ansible_host=10.0.1.1
[db]
db1 ansible_host=10.0.2.1 ansible_port=2222
web01 ansible_host=10.0.1.1
broken ansible_port=x ansible_host=10.0.2.9
nameonly
[web:vars]
http_port=80
";
        let parsed = parse_ini(text);
        let ok: Vec<(&str, Vec<String>)> =
            parsed.iter().filter_map(|p| p.host.as_ref().ok()).map(|h| (h.name.as_str(), h.tags.clone())).collect();
        assert_eq!(
            ok,
            [
                ("10.0.0.9", vec![]),
                ("web01", vec!["web".to_owned(), "db".to_owned()]),
                ("web02", vec!["web".to_owned()]),
                ("web03", vec!["web".to_owned()]),
                ("db1", vec!["db".to_owned()]),
            ]
        );
        let errors: Vec<(usize, &str)> =
            parsed.iter().filter_map(|p| p.host.as_ref().err().map(|e| (p.line, e.as_str()))).collect();
        assert_eq!(
            errors,
            [
                (8, "ansible_port \"x\" is not a number"),
                (9, "nameonly: no ansible_host, and the name is not an address")
            ]
        );
        assert_eq!(expand("n[8:10]x").unwrap(), ["n8x", "n9x", "n10x"]);
        assert!(expand("n[1:5000]").is_err());
    }

    /// Found by the `inventory_ini` fuzz target: ranges multiplied, so one short line named a billion hosts (and
    /// `expand` of the tail ran once per name of the head).
    #[test]
    fn ranges_together_name_at_most_1000_hosts() {
        assert_eq!(expand("n[1:2]x[1:3]").unwrap(), ["n1x1", "n1x2", "n1x3", "n2x1", "n2x2", "n2x3"]);
        assert_eq!(expand("n[0:9][0:99]").map(|n| n.len()), Ok(1000));
        assert!(expand("n[0:999][0:999][0:999]").unwrap_err().ends_with("names more than 1000 hosts"));
        let parsed = parse_ini("h[0:999][0:999][0:999][0:999] ansible_host=10.0.0.1\n");
        assert_eq!(parsed.len(), 1);
        assert!(parsed[0].host.is_err());
    }
}
