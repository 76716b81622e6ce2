"""A small valid spec the spec tests vary one field at a time."""

GOOD = """\
vcenter:
  url: https://vc.example.com/sdk
  username: admin
  passwordEnv: PW
solution:
  key: org.example.t
  version: "1.0"
agencies:
  - name: contrail
    ovf:
      url: http://127.0.0.1/c.ovf
    scope:
      - /DC0/host/DC0_C0
    ipPlan:
      cidr: 10.10.0.0/24
      gateway: 10.10.0.1
      range: 10.10.0.10-10.10.0.200
    perHost:
      fabricIp: "{ip}"
"""
