package custos

import data.custos.config

# Cardholder-data tables: those the configuration declares
# (config.cardholder_tables) and the columns custos' discovery pass found
# holding card numbers (data.custos.discovered.cardholder_tables, put there
# at run time by custos; see "custos discover"). A declared column keeps its
# declared strategy; a discovered one is masked as a PAN column and is
# refused in predicates, functions, orderings and the like for agents, as
# declared ones are.
cardholder_tables := object.union(discovered_tables, config.cardholder_tables)

default discovered_tables := {}

discovered_tables := data.custos.discovered.cardholder_tables if is_object(data.custos.discovered.cardholder_tables)
