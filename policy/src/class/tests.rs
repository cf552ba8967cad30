use super::*;

#[test]
fn hints_only_raise() {
    let all = [ToolClass::Read, ToolClass::Write, ToolClass::Destructive];
    let hints = [None, Some(false), Some(true)];
    for class in all {
        for read_only in hints {
            for destructive in hints {
                let raised = class.raised_by(UpstreamHints {
                    read_only,
                    destructive,
                });
                assert!(raised >= class, "{class} lowered to {raised}");
            }
        }
    }
}

#[test]
fn destructive_claim_is_believed() {
    let hints = UpstreamHints {
        read_only: Some(true),
        destructive: Some(true),
    };
    assert_eq!(ToolClass::Read.raised_by(hints), ToolClass::Destructive);
}

#[test]
fn read_only_claim_changes_nothing() {
    let hints = UpstreamHints {
        read_only: Some(true),
        destructive: Some(false),
    };
    assert_eq!(ToolClass::Write.raised_by(hints), ToolClass::Write);
}

#[test]
fn class_names_round_trip() {
    for class in [ToolClass::Read, ToolClass::Write, ToolClass::Destructive] {
        assert_eq!(class.as_str().parse::<ToolClass>(), Ok(class));
    }
    assert_eq!("Read".parse::<ToolClass>(), Err(UnknownClassError));
}
