using System.Buffers;
using System.Diagnostics;
using System.Text;
using GpuExecutor.Containers;
using GpuExecutor.Stages;

namespace GpuExecutor.Tests;

public sealed class StageServerProtocolTests
{
    private const string Nonce = "0123456789abcdef01234567";

    private static byte[] Reply(int code) => Encoding.ASCII.GetBytes($"\u001egpu-executor:{Nonce}:{code}\n");

    private static (string Output, int? ExitCode) Scan(params byte[][] chunks)
    {
        var scanner = new ServerReplyScanner(nonce => nonce == Nonce);
        var output = new ArrayBufferWriter<byte>();
        var replies = new List<ServerReply>();
        foreach (var chunk in chunks)
            scanner.Feed(chunk, output, replies);
        Assert.True(replies.Count <= 1);
        return (Encoding.UTF8.GetString(output.WrittenSpan), replies.Count == 1 ? replies[0].Value : null);
    }

    [Fact]
    public void The_servers_word_that_its_container_is_stopping_carries_the_last_stages_nonce_with_the_suffix_run_expects()
    {
        var script = StageServer.Command[2];

        Assert.Contains($"printf '\\036gpu-executor:%s{StageServer.ContainerStopNonce("")}:%d\\n' \"$last_run\" 15 >&4", script);
        Assert.Contains("last_run=\"$nonce\"", script);
    }

    [Fact]
    public void Output_passes_through_and_the_reply_gives_the_exit_code()
    {
        var (output, exitCode) = Scan([.. "epoch 1 loss 0.5\n"u8, .. Reply(42)]);

        Assert.Equal("epoch 1 loss 0.5\n", output);
        Assert.Equal(42, exitCode);
    }

    [Fact]
    public void A_reply_split_byte_by_byte_across_chunks_is_still_found()
    {
        byte[] stream = [.. "no newline at the end"u8, .. Reply(0), .. "after the reply"u8];

        var (output, exitCode) = Scan(stream.Select(value => new[] { value }).ToArray());

        Assert.Equal("no newline at the endafter the reply", output);
        Assert.Equal(0, exitCode);
    }

    [Fact]
    public void Replies_to_several_of_our_requests_are_all_taken_out()
    {
        var scanner = new ServerReplyScanner(nonce => nonce is "aa" or "bb");
        var output = new ArrayBufferWriter<byte>();
        var replies = new List<ServerReply>();

        scanner.Feed("x\u001egpu-executor:aa:3\ny\u001egpu-executor:bb:0\nz"u8, output, replies);

        Assert.Equal("xyz", Encoding.UTF8.GetString(output.WrittenSpan));
        Assert.Equal([new ServerReply("aa", 3) { OutputOffset = 1 }, new ServerReply("bb", 0) { OutputOffset = 2 }], replies);
    }

    [Theory]
    [InlineData("\u001e alone\n")]
    [InlineData("\u001egpu-executor:someone-elses-nonce:3\n")]
    [InlineData("\u001egpu-executor:ffff0000:3\n")]
    [InlineData("\u001egpu-executor:0123456789abcdef01234567:\n")]
    [InlineData("\u001egpu-executor:0123456789abcdef01234567:12x\n")]
    [InlineData("\u001e\u001egpu-exec")]
    public void Bytes_that_only_look_like_a_reply_are_passed_on_unchanged(string lookalike)
    {
        var bytes = Encoding.UTF8.GetBytes(lookalike);

        var (output, exitCode) = Scan(bytes, "tail\n"u8.ToArray());

        Assert.Null(exitCode);
        Assert.Equal(lookalike + "tail\n", output);
    }

    [Fact]
    public void A_lookalike_right_before_the_real_reply_is_output_and_the_reply_still_counts()
    {
        byte[] stream = [.. "\u001egpu-executor:"u8, .. Reply(7)];

        var (output, exitCode) = Scan(stream);

        Assert.Equal("\u001egpu-executor:", output);
        Assert.Equal(7, exitCode);
    }

    [Fact]
    public async Task A_run_request_carries_any_script_through_bash_printf_unchanged()
    {
        var script = "#!/usr/bin/env bash\nprintf '%s\\n' \"a\\\\b\" $'\\n' `id` \"$(echo x)\"\r\n\t% %s %b \\c \\0 \\x41 ✓\n" + new string('z', 70_000);
        var request = StageServer.RunRequest(Nonce, Encoding.UTF8.GetBytes(script));

        var lines = request.AsSpan();
        var headerEnd = lines.IndexOf((byte)'\n');
        Assert.Equal($"run {Nonce} -", Encoding.ASCII.GetString(lines[..headerEnd]));
        var encoded = lines[(headerEnd + 1)..];
        Assert.Equal(encoded.Length - 1, encoded.IndexOf((byte)'\n'));

        // What the server does with the line: read -r, then printf '%b'.
        var start = new ProcessStartInfo("bash", ["-c", "IFS= read -r encoded; printf '%b' \"$encoded\""])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var bash = Process.Start(start)!;
        var output = new MemoryStream();
        var copy = bash.StandardOutput.BaseStream.CopyToAsync(output, TestContext.Current.CancellationToken);
        await bash.StandardInput.BaseStream.WriteAsync(encoded.ToArray(), TestContext.Current.CancellationToken);
        bash.StandardInput.Close();
        await bash.WaitForExitAsync(TestContext.Current.CancellationToken);
        await copy;

        Assert.Equal(script, Encoding.UTF8.GetString(output.ToArray()));
    }

    [Fact]
    public async Task The_servers_status_tells_a_running_stage_one_that_replied_and_one_whose_wrapper_a_signal_killed()
    {
        // The real server script, in a local bash: `status` needs no container to be checked.
        var start = new ProcessStartInfo("bash", StageServer.Command.Skip(1))
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var server = Process.Start(start)!;
        var cancellation = TestContext.Current.CancellationToken;
        var stdout = new StringBuilder();
        var reading = Task.Run(async () =>
        {
            var buffer = new char[4096];
            int read;
            while ((read = await server.StandardOutput.ReadAsync(buffer, cancellation)) > 0)
            {
                lock (stdout)
                    stdout.Append(buffer, 0, read);
            }
        }, cancellation);
        async Task<int> AskAsync(byte[] request, string nonce)
        {
            await server.StandardInput.BaseStream.WriteAsync(request, cancellation);
            await server.StandardInput.BaseStream.FlushAsync(cancellation);
            var reply = $"\u001egpu-executor:{nonce}:";
            for (var waited = 0; waited < 200; waited++)
            {
                lock (stdout)
                {
                    var text = stdout.ToString();
                    var at = text.IndexOf(reply, StringComparison.Ordinal);
                    if (at >= 0 && text.IndexOf('\n', at) is var end and > 0)
                        return int.Parse(text[(at + reply.Length)..end], System.Globalization.CultureInfo.InvariantCulture);
                }
                await Task.Delay(50, cancellation);
            }
            throw new TimeoutException($"no reply to {Encoding.ASCII.GetString(request).Trim()}: {stdout}");
        }
        try
        {
            // A stage that runs on, one that ends by itself with 3, and one that kills its
            // wrapper (its parent) the way `kill -9 -1` would.
            await server.StandardInput.BaseStream.WriteAsync(StageServer.RunRequest("aa01", "sleep 30\n"u8), cancellation);
            Assert.Equal(3, await AskAsync(StageServer.RunRequest("bb02", "exit 3\n"u8), "bb02"));
            await server.StandardInput.BaseStream.WriteAsync(StageServer.RunRequest("cc03", "kill -9 $PPID; sleep 0.2\n"u8), cancellation);
            await Task.Delay(500, cancellation);

            Assert.Equal(StageServer.WrapperRunning, await AskAsync(StageServer.StatusRequest("s1", "aa01"), "s1"));
            Assert.Equal(0, await AskAsync(StageServer.StatusRequest("s2", "bb02"), "s2"));
            Assert.Equal(StageServer.KilledBySignal + 9, await AskAsync(StageServer.StatusRequest("s3", "cc03"), "s3"));
            // Asked again, it says the same: the exit status is kept once waited for.
            Assert.Equal(StageServer.KilledBySignal + 9, await AskAsync(StageServer.StatusRequest("s4", "cc03"), "s4"));
            Assert.Equal(StageServer.WrapperUnknown, await AskAsync(StageServer.StatusRequest("s5", "dd04"), "s5"));
            lock (stdout)
                Assert.DoesNotContain("cc03:", stdout.ToString());
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync(cancellation);
        }
        // Only the one stage that replied says so on stderr: the server's own notices (bash's
        // "Killed" for the wrapper) never reach it.
        Assert.Equal("\u001egpu-executor:bb02:3\n", await server.StandardError.ReadToEndAsync(cancellation));
    }
}
