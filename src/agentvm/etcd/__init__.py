"""The etcd adapter: the only code that speaks to etcd (through etcd3gw, over etcd's JSON gateway ``/v3/``).

``controller.leadership`` uses it to hold one lease per replica and the leadership keys attached to it.
"""
