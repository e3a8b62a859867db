from stlm.cli.main import main

raise SystemExit(main())
