"""Language layer: the pre-scan, the Lark parser, the AST and the evaluation of expressions."""
