from atelier.cli.main import main

raise SystemExit(main())
