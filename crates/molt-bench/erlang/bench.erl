%% The Erlang/OTP side of molt's benchmark harness: each function does the
%% same work as the molt workload of the same name (crates/molt-bench/src/
%% workloads.rs) and prints one JSON object: {"seconds": S} plus, for memory,
%% "bytes_per_process" (resident memory, as molt measures it).
-module(bench).
-export([run/1, round_trips/1, one_way/1, spawn/1, memory/1, selective_receive/1]).
-compile({no_auto_import, [spawn/1]}).

run([Workload, N]) ->
    Result = ?MODULE:(list_to_atom(Workload))(list_to_integer(N)),
    io:format("~s~n", [json(Result)]),
    halt(0).

json(Pairs) ->
    Fields = [io_lib:format("\"~s\": ~p", [K, V]) || {K, V} <- Pairs],
    ["{", lists:join(", ", Fields), "}"].

seconds(Start) ->
    erlang:monotonic_time(nanosecond) - Start + 0.0.

now_ns() -> erlang:monotonic_time(nanosecond).

round_trips(N) ->
    Echo = erlang:spawn(fun Loop() -> receive {From, X} -> From ! X, Loop() end end),
    Start = now_ns(),
    ping(Echo, 0, N),
    S = seconds(Start) / 1.0e9,
    exit(Echo, kill),
    [{seconds, S}].

ping(_, N, N) -> ok;
ping(Echo, I, N) ->
    Echo ! {self(), I},
    receive I -> ping(Echo, I + 1, N) end.

one_way(N) ->
    Parent = self(),
    Start = now_ns(),
    Sink = erlang:spawn(fun() -> Parent ! {done, count(N, 0)} end),
    send_all(Sink, 0, N),
    receive {done, _} -> ok end,
    [{seconds, seconds(Start) / 1.0e9}].

count(0, Sum) -> Sum;
count(N, Sum) -> receive X when is_integer(X) -> count(N - 1, Sum + X) end.

send_all(_, N, N) -> ok;
send_all(Pid, I, N) -> Pid ! I, send_all(Pid, I + 1, N).

spawn(N) ->
    Start = now_ns(),
    Pids = [erlang:spawn(fun() -> receive _ -> ok end end) || _ <- lists:seq(1, N)],
    S = seconds(Start) / 1.0e9,
    [P ! go || P <- Pids],
    [{seconds, S}].

resident_bytes() ->
    {ok, Statm} = file:read_file("/proc/self/statm"),
    [_, Resident | _] = string:split(binary_to_list(Statm), " ", all),
    list_to_integer(Resident) * 4096.

memory(N) ->
    Parent = self(),
    garbage_collect(),
    Before = resident_bytes(),
    Start = now_ns(),
    Pids = [erlang:spawn(fun() -> Parent ! started, receive _ -> ok end end) || _ <- lists:seq(1, N)],
    [receive started -> ok end || _ <- Pids],
    S = seconds(Start) / 1.0e9,
    %% The parent's list of pids is not the processes' memory: 2 words a cell.
    Bytes = (resident_bytes() - Before - N * 16) / N,
    [P ! go || P <- Pids],
    [{seconds, S}, {bytes_per_process, Bytes}].

selective_receive(N) ->
    Rounds = 10,
    Receiver = erlang:spawn(fun() -> reply(Rounds) end),
    send_all(Receiver, 0, N),
    Receiver ! {self(), -1},
    receive -1 -> ok end,
    Start = now_ns(),
    [begin Receiver ! {self(), K}, receive K -> ok end end || K <- lists:seq(1, Rounds - 1)],
    [{seconds, seconds(Start) / 1.0e9 / (Rounds - 1)}].

reply(0) -> ok;
reply(Rounds) ->
    receive {From, K} when is_pid(From) -> From ! K end,
    reply(Rounds - 1).
