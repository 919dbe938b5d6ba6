package custos

# HTTP requests (kind "http") have no rules yet: every request of a principal
# with a role is denied with a reason. HTTP rules go here: collect allow reasons,
# denials and approvals in sets as sql.rego does and build http_decision from
# them, keeping a denial the winner.
http_decision := deny([sprintf("no HTTP rule allows %s %s yet", [method, path])]) if {
	method := object.get(input, ["http", "method"], "")
	path := object.get(input, ["http", "path"], "")
}
