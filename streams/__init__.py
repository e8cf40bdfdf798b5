"""The usage stream processor (Faust): usage.events -> validate -> dedupe -> price -> usage.billable, quota state."""
