"""What every stage shares (rules/common.smk): config validation against config/schema.yaml, its generated
reference, the results-folder guards and the rule-script runner."""
