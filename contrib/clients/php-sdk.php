<?php

declare(strict_types=1);

/*
 * Drive taler-otp with the GNU Taler PHP SDK (mirrorps/taler-php), as a real client.
 *
 *   php php-sdk.php MODE
 *
 * Environment:
 *   TALER_CLIENTS    the folder of the client snapshots (php-bootstrap.php, taler-php/, ...)
 *   TALER_BASE_URL   the server behind a TLS terminator (the SDK accepts only https://), e.g. https://127.0.0.1:8443/
 *   TALER_CA_FILE    the terminator's self-signed certificate
 *   TALER_INSTANCE   instance id (login user name and target instance)
 *   TALER_PASSWORD   that instance's password          (login modes)
 *   TALER_TOKEN      an access token "secret-token:..." (token-list)
 *   TALER_DEVICE_ID  a device that must be listed
 *
 * Modes (exit 0 on success, 1 on failure with the reason on stderr):
 *   token-list      Factory::create with 'token' => 'Bearer <TALER_TOKEN>', then list OTP devices.
 *   login-list      Factory::create with username/password/instance (the SDK's own login:
 *                   POST instances/<I>/private/token with HTTP Basic), then list OTP devices.
 *   wrong-password  the same login with a wrong password must fail with HTTP 401.
 *   login-tokens    log in with scope "write", list the instance's tokens (GET .../private/tokens),
 *                   find the session's own token, revoke it (DELETE .../private/token) and
 *                   check that the revoked token no longer lists devices (401).
 *   update-auth     log in with scope "write", change the password (POST .../private/auth
 *                   {"method":"token","password":...}), log in with the new one and not with
 *                   the old one, then restore the old one.
 * Every mode also fails on a warning the SDK logs (it logs one when the announced protocol
 * version range does not cover the version it targets).
 */

$clients = getenv('TALER_CLIENTS') ?: '';
if ($clients === '' || !is_file($clients . '/php-bootstrap.php')) {
    fwrite(STDERR, "php-sdk: TALER_CLIENTS must name the client snapshots folder (with php-bootstrap.php)\n");
    exit(2);
}
require $clients . '/php-bootstrap.php';

use Taler\Exception\TalerException;
use Taler\Factory\Factory;

/** Collects what the SDK logs at warning level or above. */
final class CollectingLogger extends \Psr\Log\AbstractLogger
{
    /** @var list<string> */
    public array $problems = [];

    public function log($level, $message, array $context = []): void
    {
        if (in_array($level, ['warning', 'error', 'critical', 'alert', 'emergency'], true)) {
            $this->problems[] = "$level: $message";
        }
    }
}

function env(string $name): string
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        fail("environment variable $name is not set");
    }
    return $v;
}

function fail(string $why): never
{
    fwrite(STDERR, "php-sdk: $why\n");
    exit(1);
}

function httpClient(): \GuzzleHttp\Client
{
    return new \GuzzleHttp\Client([
        'verify' => env('TALER_CA_FILE'),
        'timeout' => 15.0,
        'connect_timeout' => 5.0,
        'allow_redirects' => false,
    ]);
}

/**
 * The SDK's login: Factory::create with username/password/instance.
 *
 * @param array<string, mixed> $extra
 */
function login(string $password, CollectingLogger $logger, array $extra = []): \Taler\Taler
{
    $instance = env('TALER_INSTANCE');
    return Factory::create([
        'base_url' => env('TALER_BASE_URL'),
        'username' => $instance,
        'password' => $password,
        'instance' => $instance,
        'client' => httpClient(),
        'logger' => $logger,
    ] + $extra);
}

/** Lists the devices of the session's instance and checks that TALER_DEVICE_ID is among them. */
function assertDeviceListed(\Taler\Taler $taler): int
{
    $want = env('TALER_DEVICE_ID');
    $list = $taler->otpDevices()->getOtpDevices();
    if (!$list instanceof \Taler\Api\OtpDevices\Dto\OtpDevicesSummaryResponse) {
        fail('getOtpDevices did not return OtpDevicesSummaryResponse');
    }
    $ids = array_map(static fn($d) => $d->otp_device_id, $list->otp_devices);
    if (!in_array($want, $ids, true)) {
        fail("device '$want' is not in the list: " . json_encode($ids));
    }
    return count($ids);
}

function assertNoProblems(CollectingLogger $logger): void
{
    if ($logger->problems !== []) {
        fail('the SDK logged: ' . implode(' | ', $logger->problems));
    }
}

/** Runs $f and returns the HTTP status of the TalerException it throws (0 for none). */
function statusOfFailure(callable $f): int
{
    try {
        $f();
    } catch (TalerException $e) {
        return (int)$e->getCode();
    }
    return 0;
}

function describe(\Throwable $e): string
{
    $text = get_class($e) . ': ' . $e->getMessage();
    if ($e instanceof TalerException && $e->getRawResponseBody() !== null) {
        $text .= ' body=' . $e->getRawResponseBody();
    }
    return $text;
}

$mode = $argv[1] ?? '';
$logger = new CollectingLogger();

try {
    switch ($mode) {
        case 'token-list':
            $taler = Factory::create([
                'base_url' => env('TALER_BASE_URL'),
                'token' => 'Bearer ' . env('TALER_TOKEN'),
                'client' => httpClient(),
                'logger' => $logger,
            ]);
            $n = assertDeviceListed($taler);
            assertNoProblems($logger);
            echo "php SDK (token) listed $n device(s) over TLS\n";
            break;

        case 'login-list':
            $taler = login(env('TALER_PASSWORD'), $logger);
            $token = $taler->getConfig()->getAuthToken();
            if (!str_starts_with($token, 'secret-token:')) {
                fail("the login answered an access_token without the secret-token: prefix");
            }
            $n = assertDeviceListed($taler);
            assertNoProblems($logger);
            $exp = $taler->getConfig()->getAuthTokenExpiresAtTs();
            echo "php SDK logged in as '" . env('TALER_INSTANCE') . "' (token expires "
                . ($exp === null ? 'never' : "at t_s=$exp") . ") and listed $n device(s)\n";
            break;

        case 'wrong-password':
            $status = statusOfFailure(static fn() => login(env('TALER_PASSWORD') . '-wrong', $logger));
            if ($status !== 401) {
                fail("a wrong password gave status $status, expected 401");
            }
            echo "php SDK login with a wrong password: 401\n";
            break;

        case 'login-tokens':
            $instance = env('TALER_INSTANCE');
            $description = 'php-sdk-' . bin2hex(random_bytes(4));
            $taler = login(env('TALER_PASSWORD'), $logger, [
                'scope' => 'write',
                'duration_us' => 3_600_000_000,
                'description' => $description,
            ]);
            $infos = $taler->instance()->getAccessTokens($instance);
            if (!$infos instanceof \Taler\Api\Instance\Dto\TokenInfos) {
                fail('getAccessTokens did not return TokenInfos');
            }
            $mine = array_values(array_filter($infos->tokens, static fn($t) => $t->description === $description));
            if (count($mine) !== 1) {
                fail("expected one listed token described '$description', found " . count($mine));
            }
            $exp = $mine[0]->expiration->t_s;
            $created = $mine[0]->creation_time->t_s;
            if (!is_int($exp) || !is_int($created) || $exp - $created < 3500 || $exp - $created > 3700) {
                fail("the token asked for 1 h lives from $created to $exp");
            }
            $taler->instance()->deleteAccessToken($instance);
            $status = statusOfFailure(static fn() => $taler->otpDevices()->getOtpDevices());
            if ($status !== 401) {
                fail("the revoked token listing devices gave status $status, expected 401");
            }
            assertNoProblems($logger);
            echo "php SDK listed " . count($infos->tokens) . " token(s) (its own serial {$mine[0]->serial}, scope {$mine[0]->scope}), revoked its own, then got 401\n";
            break;

        case 'update-auth':
            $instance = env('TALER_INSTANCE');
            $old = env('TALER_PASSWORD');
            $new = $old . '-new';
            $taler = login($old, $logger, ['scope' => 'write']);
            $taler->instance()->updateAuth($instance, new \Taler\Api\Instance\Dto\InstanceAuthConfigToken($new));
            $again = login($new, $logger, ['scope' => 'write']);
            assertDeviceListed($again);
            $status = statusOfFailure(static fn() => login($old, new CollectingLogger()));
            if ($status !== 401) {
                fail("the old password after the change gave status $status, expected 401");
            }
            // Restore the password for whoever runs next.
            $again->instance()->updateAuth($instance, new \Taler\Api\Instance\Dto\InstanceAuthConfigToken($old));
            assertDeviceListed(login($old, $logger));
            assertNoProblems($logger);
            echo "php SDK changed the password through POST private/auth, logged in with the new one, not the old one, and restored it\n";
            break;

        default:
            fwrite(STDERR, "usage: php php-sdk.php token-list|login-list|wrong-password|login-tokens|update-auth\n");
            exit(2);
    }
} catch (\Throwable $e) {
    fail("$mode: " . describe($e));
}
exit(0);
