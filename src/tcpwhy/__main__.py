from tcpwhy.cli import main

raise SystemExit(main())
