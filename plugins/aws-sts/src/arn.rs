//! IAM ARN checks shared by the AWS connectors.

/// `arn:aws:iam::<12 digits>:<kind>/...`, or for policies also `arn:aws:iam::aws:policy/...`.
pub fn is_iam_arn(arn: &str, kind: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && (parts[1] == "aws" || parts[1].starts_with("aws-"))
        && parts[2] == "iam"
        && parts[3].is_empty()
        && ((parts[4].len() == 12 && parts[4].chars().all(|c| c.is_ascii_digit()))
            || (kind == "policy" && parts[4] == "aws"))
        && parts[5]
            .strip_prefix(&format!("{kind}/"))
            .is_some_and(|rest| !rest.is_empty() && !rest.ends_with('/'))
        && !arn.chars().any(|c| c.is_whitespace() || c.is_control())
}
